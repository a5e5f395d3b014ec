//! `qapi_enum!`: declares a string enumeration from QEMU's schema (QAPI) that keeps values
//! it does not know, as the QMP spec asks of clients. The expansion names every path in
//! full, so a module using it needs no imports for it.

/// Declares a string enumeration from QEMU's schema with an `Other` catch-all, so a value
/// added by a newer QEMU decodes instead of failing.
macro_rules! qapi_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $($(#[$vmeta:meta])* $variant:ident = $wire:literal,)+ }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this client does not know (a newer QEMU), kept verbatim.
            Other(String),
        }

        impl $name {
            /// The value as QEMU spells it.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $wire,)+
                    Self::Other(other) => other,
                }
            }

            fn from_wire(wire: &str) -> Self {
                match wire {
                    $($wire => Self::$variant,)+
                    other => Self::Other(other.to_owned()),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D>(deserializer: D) -> Result<Self, D::Error>
            where
                D: ::serde::Deserializer<'de>,
            {
                let wire = <String as ::serde::Deserialize>::deserialize(deserializer)?;
                Ok(Self::from_wire(&wire))
            }
        }
    };
}

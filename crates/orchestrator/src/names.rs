//! Random VM names: an adjective and an animal, like `bold-fox` (50 × 50 = 2,500 pairs).
//! Uniqueness is the registry's job: the caller retries on a taken name.

use boxcutter_types::VmName;

const ADJECTIVES: [&str; 50] = [
    "able", "agile", "amber", "brave", "breezy", "bold", "bright", "brisk", "calm", "clever",
    "cosmic", "crisp", "daring", "deft", "eager", "fair", "fancy", "fast", "fierce", "fond",
    "gentle", "glad", "golden", "grand", "happy", "hardy", "jolly", "keen", "kind", "lively",
    "lucky", "merry", "mighty", "misty", "noble", "plucky", "proud", "quick", "quiet", "rapid",
    "shiny", "silent", "sly", "snowy", "steady", "sunny", "swift", "tidy", "vivid", "witty",
];

const ANIMALS: [&str; 50] = [
    "badger", "bat", "bear", "beaver", "bison", "bobcat", "crane", "crow", "deer", "dingo", "dove",
    "eagle", "eel", "elk", "falcon", "ferret", "finch", "fox", "gecko", "goat", "goose", "hare",
    "hawk", "heron", "ibis", "jackal", "koala", "lark", "lemur", "lion", "lynx", "marten", "mink",
    "moose", "newt", "otter", "owl", "panda", "puffin", "quail", "raven", "robin", "seal", "shrew",
    "sloth", "stoat", "swan", "tiger", "wolf", "yak",
];

/// A random adjective-animal name.
pub fn random_name() -> VmName {
    let pick = |words: &[&'static str]| {
        let n = getrandom::u32().unwrap_or_else(|_| std::process::id());
        words[n as usize % words.len()]
    };
    let name = format!("{}-{}", pick(&ADJECTIVES), pick(&ANIMALS));
    VmName::new(name).expect("the word lists hold valid name parts")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_pair_is_a_valid_distinct_name() {
        let mut seen = HashSet::new();
        for adjective in ADJECTIVES {
            for animal in ANIMALS {
                let name = format!("{adjective}-{animal}");
                assert!(VmName::new(name.clone()).is_ok(), "{name}");
                assert!(seen.insert(name.clone()), "{name} twice");
            }
        }
        assert_eq!(seen.len(), 2500);
    }

    #[test]
    fn names_vary() {
        let names: HashSet<String> = (0..50).map(|_| random_name().to_string()).collect();
        assert!(names.len() > 10, "{names:?}");
    }
}

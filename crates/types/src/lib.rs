//! Wire types shared by every Boxcutter daemon: validated names, VM specs and records, progress events and the API error body.

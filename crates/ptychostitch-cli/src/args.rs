//! Parsers for the whole-number options. Negative and other non-numbers reach these (the options
//! take hyphen values), so `--chunk -1` says what the option wants instead of clap's advice to
//! write `-- -1`, which does not work for an option's value.

/// A count of at least 1 (patches, positions, runs, sizes).
pub fn count(text: &str) -> Result<usize, String> {
    match whole(text)? {
        v if v < 1 => Err(format!("must be at least 1, not {v}")),
        v => usize::try_from(v).map_err(|_| format!("{v} is too large")),
    }
}

/// A thread count: 0 for all cores, or a positive number.
pub fn threads(text: &str) -> Result<usize, String> {
    match whole(text)? {
        v if v < 0 => Err(format!(
            "must be 0 (all cores) or a positive number, not {v}"
        )),
        v => usize::try_from(v).map_err(|_| format!("{v} is too large")),
    }
}

fn whole(text: &str) -> Result<i128, String> {
    text.trim()
        .parse::<i128>()
        .map_err(|_| "must be a whole number".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_threads() {
        assert_eq!(count("4096"), Ok(4096));
        assert_eq!(count("0"), Err("must be at least 1, not 0".into()));
        assert_eq!(count("-1"), Err("must be at least 1, not -1".into()));
        assert_eq!(count("2.5"), Err("must be a whole number".into()));
        assert!(
            count("99999999999999999999999")
                .unwrap_err()
                .contains("too large")
        );
        assert_eq!(threads("0"), Ok(0));
        assert_eq!(
            threads("-2"),
            Err("must be 0 (all cores) or a positive number, not -2".into())
        );
    }
}

//! "Did you mean" suggestions for misspelt keys, steps, connectors and tables.

/// The candidate closest to `word`, when it is close enough to be a likely typo: at most one
/// edit for short words, up to a third of the word's length (at most three) for longer ones.
pub fn did_you_mean<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    let lower = word.to_lowercase();
    candidates
        .filter(|c| *c != word)
        .map(|c| (strsim::damerau_levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// Words joined for a hint: "`a`, `b`, `c`", at most twelve of them.
pub fn list_words<'a>(words: impl Iterator<Item = &'a str>) -> String {
    let words: Vec<&str> = words.collect();
    let mut out: Vec<String> = words.iter().take(12).map(|w| format!("`{w}`")).collect();
    if words.len() > 12 {
        out.push("...".into());
    }
    out.join(", ")
}

/// Every word joined for a hint: "`a`, `b`, `c`".
pub fn list_all<'a>(words: impl Iterator<Item = &'a str>) -> String {
    words
        .map(|w| format!("`{w}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// "1 cell", "2 cells".
pub fn count(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

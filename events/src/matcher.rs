//! Keyword matching for triggers and handoff (`Matcher`): a list of keywords, each plain or a
//! `/regular expression/`, compiled once per setting and matched against each inbound message.
//! Matching ignores case (Unicode-aware) everywhere. Pure: no I/O.

use std::fmt;
use std::str::FromStr;

use regex::{RegexBuilder, RegexSet, RegexSetBuilder};
use serde::{Deserialize, Serialize};

/// The most entries a keyword list holds.
pub const MAX_KEYWORDS: usize = 100;
/// The longest entry of a keyword list, in bytes (slashes of a regular expression included).
pub const MAX_KEYWORD_LEN: usize = 200;
/// The most a list's regular expressions may take once compiled, all together, in bytes; also
/// the most the lazy DFA's cache of the list may grow to. A longer pattern is refused when the
/// setting is set, so no pattern can eat memory.
pub const REGEX_SIZE_LIMIT: usize = 512 * 1024;

/// How a listed keyword matches a message (case-insensitive always).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchMode {
    /// The keyword appears anywhere in the message ("price" matches "prices?").
    Contains,
    /// The keyword appears as whole word(s): bounded by the text's ends or non-alphanumeric
    /// characters ("human" matches "a human please" and "HUMAN!", not "humanity"). A multi-word
    /// keyword matches with any whitespace between its words.
    Word,
    /// The whole message equals the keyword (surrounding whitespace and trailing punctuation
    /// `.!?…` and `。！？` ignored, inner whitespace runs compared as one space).
    Exact,
    /// The message starts with the keyword (leading whitespace ignored).
    Prefix,
}

impl MatchMode {
    /// Every mode, in the order of the documentation.
    pub const ALL: [MatchMode; 4] = [Self::Contains, Self::Word, Self::Exact, Self::Prefix];

    /// The mode's name, as in settings and JSON: "contains", "word", "exact" or "prefix".
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Contains => "contains",
            Self::Word => "word",
            Self::Exact => "exact",
            Self::Prefix => "prefix",
        }
    }
}

impl fmt::Display for MatchMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a mode name ("contains", "word", "exact", "prefix"; ASCII case and surrounding
/// whitespace ignored).
impl FromStr for MatchMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let name = s.trim();
        Self::ALL
            .into_iter()
            .find(|mode| mode.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                format!("unknown match mode {name:?}: expected contains, word, exact or prefix")
            })
    }
}

/// A compiled list of keywords. An entry written as `/pattern/` is a regular expression (the
/// `regex` crate's syntax, case-insensitive, matched anywhere in the message with its
/// surrounding whitespace trimmed, unless anchored); every other entry, trimmed, matches by the
/// mode.
///
/// Plain keywords are compared lowercased on both sides (Unicode lowercase, with the final
/// sigma `ς` read as `σ`) and with whitespace runs read as one space. Two matchers are equal
/// when they were built for the same mode from the same entries (order and duplicates of plain
/// keywords aside).
#[derive(Debug, Clone)]
pub struct Matcher {
    mode: MatchMode,
    /// The plain keywords, folded for the mode ([`fold_keyword`]), sorted, without duplicates.
    plain: Vec<Box<str>>,
    /// All regular expression entries, in list order.
    regexes: Option<RegexSet>,
}

impl Matcher {
    /// Compiles `keywords` for `mode`. Errors say which entry (1-based) and why, to be reported
    /// naming the setting: "more than 100 entries", "entry 2 is blank", "entry 3 is longer than
    /// 200 bytes", "entry 4 is an empty regular expression", "entry 1: invalid regular
    /// expression: unclosed group" (the regex crate's message), and, when every pattern compiles
    /// alone but not all together within [`REGEX_SIZE_LIMIT`], "the regular expressions are too
    /// large together: ...".
    pub fn new(mode: MatchMode, keywords: &[String]) -> Result<Matcher, String> {
        if keywords.len() > MAX_KEYWORDS {
            return Err(format!("more than {MAX_KEYWORDS} entries"));
        }
        let mut plain = Vec::new();
        let mut patterns = Vec::new();
        for (i, raw) in keywords.iter().enumerate() {
            match parse_entry(i + 1, raw)? {
                Entry::Plain(keyword) => plain.push(fold_keyword(mode, keyword)),
                Entry::Regex(pattern) => patterns.push((i + 1, pattern)),
            }
        }
        plain.sort_unstable();
        plain.dedup();
        Ok(Matcher {
            mode,
            plain,
            regexes: compile(&patterns)?,
        })
    }

    /// Checks the keywords alone (the same errors as [`Matcher::new`]), to validate a setting.
    pub fn check(keywords: &[String]) -> Result<(), String> {
        Self::new(MatchMode::Contains, keywords).map(drop)
    }

    /// Whether `text` matches one of the keywords. An empty list matches nothing.
    pub fn matches(&self, text: &str) -> bool {
        if let Some(set) = &self.regexes {
            if set.is_match(text.trim()) {
                return true;
            }
        }
        if self.plain.is_empty() {
            return false;
        }
        let mut folded = String::with_capacity(text.len());
        fold_into(text, &mut folded);
        let hay = folded.as_str();
        match self.mode {
            MatchMode::Contains => self.plain.iter().any(|k| hay.contains(&**k)),
            MatchMode::Word => self.plain.iter().any(|k| contains_word(hay, k)),
            MatchMode::Exact => {
                let hay = trim_end_punctuation(hay);
                self.plain.binary_search_by(|k| (**k).cmp(hay)).is_ok()
            }
            MatchMode::Prefix => self.plain.iter().any(|k| hay.starts_with(&**k)),
        }
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.regexes.is_none()
    }

    /// The mode plain keywords match by.
    pub fn mode(&self) -> MatchMode {
        self.mode
    }
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.mode == other.mode
            && self.plain == other.plain
            && self.regexes.as_ref().map(RegexSet::patterns)
                == other.regexes.as_ref().map(RegexSet::patterns)
    }
}

impl Eq for Matcher {}

/// One entry of a list, checked.
enum Entry<'a> {
    /// A keyword, trimmed.
    Plain(&'a str),
    /// The pattern between the slashes.
    Regex(&'a str),
}

fn parse_entry(n: usize, raw: &str) -> Result<Entry<'_>, String> {
    let entry = raw.trim();
    if entry.is_empty() {
        return Err(format!("entry {n} is blank"));
    }
    if raw.len() > MAX_KEYWORD_LEN {
        return Err(format!("entry {n} is longer than {MAX_KEYWORD_LEN} bytes"));
    }
    match entry.strip_prefix('/').and_then(|e| e.strip_suffix('/')) {
        Some("") => Err(format!("entry {n} is an empty regular expression")),
        Some(pattern) => Ok(Entry::Regex(pattern)),
        None => Ok(Entry::Plain(entry)),
    }
}

/// One set of all the patterns (numbered by entry), or the first entry that does not compile.
fn compile(patterns: &[(usize, &str)]) -> Result<Option<RegexSet>, String> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let set_error = match RegexSetBuilder::new(patterns.iter().map(|&(_, p)| p))
        .case_insensitive(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
    {
        Ok(set) => return Ok(Some(set)),
        Err(e) => e,
    };
    // Which one? Only on error: each again alone.
    for &(n, pattern) in patterns {
        if let Err(e) = RegexBuilder::new(pattern)
            .case_insensitive(true)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
        {
            return Err(format!(
                "entry {n}: invalid regular expression: {}",
                regex_message(&e)
            ));
        }
    }
    Err(format!(
        "the regular expressions are too large together: {}",
        regex_message(&set_error)
    ))
}

/// The regex crate's message in one line: its "error: ..." line for a syntax error (the others
/// show the pattern and a caret), else its first line.
fn regex_message(e: &regex::Error) -> String {
    let text = e.to_string();
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("error:"))
        .or_else(|| text.lines().map(str::trim).find(|l| !l.is_empty()))
        .unwrap_or("unknown error");
    line.trim().to_owned()
}

/// A plain keyword as it is compared: folded ([`fold_into`]), and for [`MatchMode::Exact`]
/// without its trailing punctuation.
fn fold_keyword(mode: MatchMode, keyword: &str) -> Box<str> {
    let mut folded = String::with_capacity(keyword.len());
    fold_into(keyword, &mut folded);
    match mode {
        MatchMode::Exact => trim_end_punctuation(&folded).into(),
        _ => folded.into_boxed_str(),
    }
}

/// Appends `text` trimmed, lowercased (final sigma as `σ`), its inner whitespace runs as one
/// space.
fn fold_into(text: &str, out: &mut String) {
    let mut space = false;
    for c in text.trim().chars() {
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
        } else if c == 'ς' {
            out.push('σ');
        } else {
            out.extend(c.to_lowercase());
        }
    }
}

/// `s` without trailing `.!?…` or `。！？` (and the spaces among them), unless nothing else is left.
fn trim_end_punctuation(s: &str) -> &str {
    let trimmed = s.trim_end_matches(['.', '!', '?', '…', '。', '！', '？', ' ']);
    if trimmed.is_empty() {
        s
    } else {
        trimmed
    }
}

/// Whether `keyword` occurs in `hay` with no alphanumeric character right before or after it.
fn contains_word(hay: &str, keyword: &str) -> bool {
    let step = keyword.chars().next().map_or(1, char::len_utf8);
    let mut from = 0;
    while let Some(found) = hay.get(from..).and_then(|rest| rest.find(keyword)) {
        let start = from + found;
        let end = start + keyword.len();
        let free = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
        if free(hay[..start].chars().next_back()) && free(hay[end..].chars().next()) {
            return true;
        }
        from = start + step;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::{MatchMode, Matcher, MAX_KEYWORDS};

    fn matcher(mode: MatchMode, keywords: &[&str]) -> Matcher {
        let keywords: Vec<String> = keywords.iter().map(|k| (*k).to_owned()).collect();
        match Matcher::new(mode, &keywords) {
            Ok(m) => m,
            Err(e) => panic!("{keywords:?}: {e}"),
        }
    }

    fn error(keywords: &[&str]) -> String {
        let keywords: Vec<String> = keywords.iter().map(|k| (*k).to_owned()).collect();
        let checked = Matcher::check(&keywords).expect_err("must be refused");
        let built = Matcher::new(MatchMode::Word, &keywords).expect_err("must be refused");
        assert_eq!(checked, built);
        checked
    }

    #[test]
    fn modes_parse_and_print_their_names() {
        for mode in MatchMode::ALL {
            assert_eq!(mode.as_str().parse::<MatchMode>(), Ok(mode));
            assert_eq!(mode.to_string(), mode.as_str());
            let json = serde_json::to_string(&mode).unwrap_or_default();
            assert_eq!(json, format!("\"{mode}\""));
            assert_eq!(serde_json::from_str::<MatchMode>(&json).ok(), Some(mode));
        }
        assert_eq!(" Word ".parse::<MatchMode>(), Ok(MatchMode::Word));
        let err = "fuzzy".parse::<MatchMode>().unwrap_err();
        assert!(err.contains("fuzzy") && err.contains("contains, word, exact or prefix"));
    }

    #[test]
    fn contains_matches_anywhere() {
        let m = matcher(MatchMode::Contains, &["price", "Delivery time"]);
        assert!(m.matches("prices?"));
        assert!(m.matches("What's the PRICE"));
        assert!(m.matches("delivery\n  TIME please"));
        assert!(m.matches("overpriced"));
        assert!(!m.matches("how much is it"));
        assert!(!m.matches("delivery"));
    }

    #[test]
    fn word_matches_whole_words_only() {
        let m = matcher(MatchMode::Word, &["human", "talk to agent"]);
        assert!(m.matches("a human please"));
        assert!(m.matches("HUMAN!"));
        assert!(m.matches("human"));
        assert!(m.matches("(human)"));
        assert!(m.matches("Talk   to\tAGENT now"));
        assert!(!m.matches("humanity"));
        assert!(!m.matches("inhuman"));
        assert!(!m.matches("humans"));
        assert!(!m.matches("talk to agents"));
        assert!(!m.matches("talk to an agent"));
        // A later occurrence counts when the first is inside a word.
        assert!(m.matches("humanity needs a human"));
        // Letters of any script bound a word.
        assert!(!m.matches("humanç"));
        assert!(matcher(MatchMode::Word, &["ação"]).matches("Uma AÇÃO, já"));
    }

    #[test]
    fn exact_ignores_case_spaces_and_trailing_punctuation() {
        let m = matcher(MatchMode::Exact, &["hi", "good morning"]);
        assert!(m.matches("hi"));
        assert!(m.matches("  Hi!  "));
        assert!(m.matches("HI?!"));
        assert!(m.matches("hi ..."));
        assert!(m.matches("Good   Morning."));
        assert!(!m.matches("hi there"));
        assert!(!m.matches("oh hi"));
        assert!(!m.matches("!hi"));
        assert!(!m.matches(""));
        // A keyword written with punctuation matches without it, and one of only punctuation
        // matches itself.
        assert!(matcher(MatchMode::Exact, &["Hello!"]).matches("hello"));
        let q = matcher(MatchMode::Exact, &["?"]);
        assert!(q.matches(" ? "));
        assert!(!q.matches("what?"));
    }

    #[test]
    fn prefix_matches_the_start() {
        let m = matcher(MatchMode::Prefix, &["order", "track my"]);
        assert!(m.matches("order 123"));
        assert!(m.matches("  ORDER 123"));
        assert!(m.matches("Track  my parcel"));
        assert!(!m.matches("my order 123"));
        assert!(!m.matches("ord"));
    }

    #[test]
    fn regex_entries_match_in_any_mode() {
        for mode in MatchMode::ALL {
            let m = matcher(mode, &[r"/^order\s+\d+$/", "/(price|cost)s?/"]);
            assert!(m.matches("order 123"));
            assert!(m.matches("  ORDER   42\n"));
            assert!(!m.matches("order 12a"));
            assert!(!m.matches("my order 123"));
            assert!(m.matches("What are your Costs?"));
            assert!(m.matches("priceless"));
            assert!(!m.matches("how much"));
        }
        // Plain and regex entries together; a lone slash is plain.
        let m = matcher(MatchMode::Word, &["human", "/atend(ente|imento)/", "/"]);
        assert!(m.matches("HUMAN"));
        assert!(m.matches("quero ATENDIMENTO"));
        assert!(m.matches("a / b"));
        assert!(!m.matches("hello"));
    }

    #[test]
    fn case_folding_is_unicode_aware() {
        let m = matcher(MatchMode::Word, &["atendente", "Ärger", "ΟΔΟΣ"]);
        assert!(m.matches("ATENDENTE"));
        assert!(m.matches("so viel ärger"));
        assert!(m.matches("ÄRGER"));
        assert!(m.matches("στην οδος"));
        assert!(m.matches("οδοσ"));
        assert!(!m.matches("οδός"));
        assert!(matcher(MatchMode::Contains, &["ÇÃO"]).matches("atenção"));
        assert!(matcher(MatchMode::Exact, &["日本語"]).matches("日本語。"));
        assert!(matcher(MatchMode::Contains, &["/ärger/"]).matches("ÄRGER"));
    }

    #[test]
    fn invalid_entries_are_named() {
        assert_eq!(
            error(&["/(unclosed/"]),
            "entry 1: invalid regular expression: unclosed group"
        );
        assert_eq!(
            error(&["ok", "/fine/", r"/\w{1000}{1000}/"]),
            "entry 3: invalid regular expression: \
             Compiled regex exceeds size limit of 524288 bytes."
        );
        assert_eq!(error(&["ok", "  "]), "entry 2 is blank");
        assert_eq!(error(&[""]), "entry 1 is blank");
        assert_eq!(
            error(&["a", "b", &"x".repeat(201)]),
            "entry 3 is longer than 200 bytes"
        );
        assert_eq!(error(&["//"]), "entry 1 is an empty regular expression");
        let many: Vec<String> = (0..=MAX_KEYWORDS).map(|i| format!("k{i}")).collect();
        assert_eq!(
            Matcher::check(&many),
            Err("more than 100 entries".to_owned())
        );
        assert_eq!(Matcher::check(&many[..MAX_KEYWORDS]), Ok(()));
        // 200 bytes of multi-byte text is fine; 201 is not.
        assert_eq!(Matcher::check(&["é".repeat(100)]), Ok(()));
        assert!(Matcher::check(&[format!("x{}", "é".repeat(100))]).is_err());
    }

    #[test]
    fn patterns_fine_alone_may_be_too_large_together() {
        let err = error(&[r"/\w+\s\w+/"; 12]);
        assert!(
            err.starts_with("the regular expressions are too large together: "),
            "{err}"
        );
    }

    #[test]
    fn an_empty_list_matches_nothing() {
        for mode in MatchMode::ALL {
            let m = matcher(mode, &[]);
            assert!(m.is_empty());
            assert!(!m.matches(""));
            assert!(!m.matches("anything at all"));
        }
        assert!(!matcher(MatchMode::Word, &["x"]).is_empty());
        assert!(!matcher(MatchMode::Word, &["/x/"]).is_empty());
    }

    #[test]
    fn equal_lists_give_equal_matchers() {
        let a = matcher(MatchMode::Word, &["b", "A", "/x+/"]);
        assert_eq!(a, matcher(MatchMode::Word, &["a", " B ", "a", "/x+/"]));
        assert_ne!(a, matcher(MatchMode::Contains, &["a", "b", "/x+/"]));
        assert_ne!(a, matcher(MatchMode::Word, &["a", "b", "/y+/"]));
        assert_eq!(a.clone(), a);
        assert_eq!(a.mode(), MatchMode::Word);
    }
}

//! Splitting a long reply into the WhatsApp messages it is sent as (`split_message`). A part is
//! at most a configured number of characters (Unicode scalar values) and never more than
//! WhatsApp's own limit. Cuts prefer the largest structure that fits: paragraphs, then lines,
//! then sentences, then words, and only as a last resort a cut inside a word, which still never
//! falls inside a character nor, where another place within the limit allows it, between a
//! character and the combining mark, variation selector, emoji modifier or joiner that follows it.
//! A fenced code block (```` ``` ````) is one piece as long as it fits in a part. Pure: no I/O.

use std::ops::Range;

/// WhatsApp's own limit on one text message, in characters (Unicode scalar values).
pub const WHATSAPP_MAX_CHARS: usize = 4096;

/// Splits `text` into the messages it is sent as: each at most `max_chars` characters (0 = no
/// limit of our own), and never more than [`WHATSAPP_MAX_CHARS`].
///
/// A text that fits is one part, returned as it is (not trimmed); a text that is empty or only
/// whitespace gives no part at all. Otherwise the text is cut at paragraph boundaries (blank
/// lines) first, then at line breaks, then at sentence ends (`. `, `! `, `? `, `… `, also before
/// closing quotes or brackets, and after `。`, `！`, `？`), then at the whitespace between words,
/// and only as a last resort inside a word. Pieces are packed greedily: a part holds as many
/// whole pieces as fit, with the original text between them; a piece too long for a part is cut
/// at the next finer level. Parts are trimmed of surrounding whitespace and none is empty; only
/// whitespace is ever dropped, so the parts hold every other character of `text` once, in order.
/// A closed fenced code block (```` ``` ```` lines) is kept whole when it fits in one part.
///
/// Runs in time linear in the length of `text` (a constant number of passes per level).
pub fn split_message(text: &str, max_chars: usize) -> Vec<String> {
    let limit = if max_chars == 0 {
        WHATSAPP_MAX_CHARS
    } else {
        max_chars.min(WHATSAPP_MAX_CHARS)
    };
    if text.trim().is_empty() {
        return Vec::new();
    }
    if fits(text, limit) {
        return vec![text.to_owned()];
    }
    let fences = code_fences(text);
    let splitter = Splitter {
        text,
        limit,
        fences: &fences,
    };
    let mut parts = Vec::with_capacity(text.len() / limit + 1);
    splitter.split(0..text.len(), PARAGRAPH, &mut parts);
    parts
}

/// Cut ranks, best first. A piece too long at one rank is cut at the next one.
const PARAGRAPH: u8 = 0;
const LINE: u8 = 1;
const SENTENCE: u8 = 2;
const WORD: u8 = 3;
/// Added to the rank of a cut inside a fenced code block: every cut outside a block is tried
/// before any cut inside one.
const IN_FENCE: u8 = 4;
/// The last rank of a cut at whitespace or a sentence end; beyond it a piece is cut inside a word.
const LAST_RANK: u8 = WORD + IN_FENCE;

struct Splitter<'a> {
    text: &'a str,
    limit: usize,
    /// The closed fenced code blocks, sorted and disjoint: from the first backtick of the opening
    /// fence to the last one of the closing fence.
    fences: &'a [Range<usize>],
}

impl Splitter<'_> {
    /// Appends the parts of `range` (byte offsets on char boundaries), cut at ranks `rank` and
    /// finer.
    fn split(&self, range: Range<usize>, rank: u8, out: &mut Vec<String>) {
        let range = trim_range(self.text, range);
        let Some(piece) = self.text.get(range.clone()) else {
            return;
        };
        if piece.is_empty() {
            return;
        }
        if fits(piece, self.limit) {
            out.push(piece.to_owned());
            return;
        }
        if rank > LAST_RANK {
            self.split_inside_words(piece, out);
            return;
        }

        let mut cuts = Cuts {
            text: self.text,
            pos: range.start,
            end: range.end,
            fences: self.fences,
        }
        .filter(|cut| cut.rank <= rank);
        // The part being packed: its start, the end of its last piece's content, and its length
        // in chars up to the start of the next piece (the whitespace after its last piece included).
        let mut part: Option<(usize, usize)> = None;
        let mut used = 0;
        let mut piece_start = range.start;
        loop {
            let (content_end, next_start) = match cuts.next() {
                Some(cut) => (cut.start, cut.end),
                None => (range.end, range.end),
            };
            let content = chars(&self.text[piece_start..content_end]);
            let gap = chars(&self.text[content_end..next_start]);
            if content == 0 {
                // Nothing but a separator (not expected after trimming): it only adds length.
                used += gap;
            } else if content > self.limit {
                self.flush(part.take(), out);
                self.split(piece_start..content_end, rank + 1, out);
            } else {
                match part {
                    Some((start, _)) if used + content <= self.limit => {
                        part = Some((start, content_end));
                        used += content + gap;
                    }
                    _ => {
                        self.flush(part.replace((piece_start, content_end)), out);
                        used = content + gap;
                    }
                }
            }
            if content_end >= range.end {
                break;
            }
            piece_start = next_start;
        }
        self.flush(part, out);
    }

    fn flush(&self, part: Option<(usize, usize)>, out: &mut Vec<String>) {
        if let Some(text) = part.and_then(|(start, end)| self.text.get(start..end)) {
            push_trimmed(text, out);
        }
    }

    /// The last resort: cuts `piece` into runs of at most `limit` chars, each ending at the last
    /// cluster-friendly boundary within the limit ([`may_break`]), or at the limit itself if
    /// there is none.
    fn split_inside_words(&self, piece: &str, out: &mut Vec<String>) {
        let mut rest = piece;
        while !rest.is_empty() {
            let cut = hard_cut(rest, self.limit);
            let (head, tail) = rest.split_at(cut);
            push_trimmed(head, out);
            rest = tail;
        }
    }
}

/// A place to cut: the separator `start..end` between two pieces (whitespace, or empty after a
/// CJK sentence end), dropped when it falls between two parts.
struct Cut {
    start: usize,
    end: usize,
    rank: u8,
}

/// The cuts of `text[pos..end]`, in order, each ranked.
struct Cuts<'a> {
    text: &'a str,
    pos: usize,
    end: usize,
    fences: &'a [Range<usize>],
}

impl Cuts<'_> {
    fn ranked(&self, at: usize, rank: u8) -> u8 {
        let i = self.fences.partition_point(|fence| fence.end <= at);
        match self.fences.get(i) {
            Some(fence) if fence.start < at => rank + IN_FENCE,
            _ => rank,
        }
    }
}

impl Iterator for Cuts<'_> {
    type Item = Cut;

    fn next(&mut self) -> Option<Cut> {
        let base = self.pos;
        let rest = self.text.get(base..self.end)?;
        let mut chars = rest.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if is_break_space(c) {
                let start = base + i;
                let mut newlines = usize::from(c == '\n');
                let mut end = self.end;
                while let Some(&(j, d)) = chars.peek() {
                    if !is_break_space(d) {
                        end = base + j;
                        break;
                    }
                    newlines += usize::from(d == '\n');
                    chars.next();
                }
                let rank = match newlines {
                    0 if ends_sentence(&self.text[..start]) => SENTENCE,
                    0 => WORD,
                    1 => LINE,
                    _ => PARAGRAPH,
                };
                self.pos = end;
                return Some(Cut {
                    start,
                    end,
                    rank: self.ranked(start, rank),
                });
            }
            if is_cjk_stop(c) {
                // CJK sentences end without a space: cut after the stop and what closes with it.
                let mut at = base + i + c.len_utf8();
                while let Some(&(j, d)) = chars.peek() {
                    if !(is_cjk_stop(d) || is_closer(d)) {
                        break;
                    }
                    at = base + j + d.len_utf8();
                    chars.next();
                }
                // At the end there is nothing to cut; before a space the space is the cut.
                if chars.peek().is_some_and(|&(_, d)| !is_break_space(d)) {
                    self.pos = at;
                    return Some(Cut {
                        start: at,
                        end: at,
                        rank: self.ranked(at, SENTENCE),
                    });
                }
            }
        }
        self.pos = self.end;
        None
    }
}

/// Whether `s` has at most `limit` chars (counting only when its bytes could be more).
fn fits(s: &str, limit: usize) -> bool {
    s.len() <= limit || chars(s) <= limit
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

fn push_trimmed(s: &str, out: &mut Vec<String>) {
    let s = s.trim();
    if !s.is_empty() {
        out.push(s.to_owned());
    }
}

/// `range` without the whitespace at its ends.
fn trim_range(text: &str, range: Range<usize>) -> Range<usize> {
    let Some(s) = text.get(range.clone()) else {
        return range.start..range.start;
    };
    let start = range.start + (s.len() - s.trim_start().len());
    let end = range.end - (s.len() - s.trim_end().len());
    start..end.max(start)
}

/// Whitespace a message may be cut at: all of it but the no-break spaces.
fn is_break_space(c: char) -> bool {
    c.is_whitespace() && !matches!(c, '\u{a0}' | '\u{2007}' | '\u{202f}')
}

/// Whether `before` (the text before a space) ends a sentence, closing quotes, brackets and
/// WhatsApp markup after the stop allowed.
fn ends_sentence(before: &str) -> bool {
    let mut rev = before.chars().rev();
    for _ in 0..4 {
        match rev.next() {
            Some('.' | '!' | '?' | '…') => return true,
            Some(c) if is_cjk_stop(c) => return true,
            Some(c) if is_closer(c) => {}
            _ => return false,
        }
    }
    false
}

fn is_cjk_stop(c: char) -> bool {
    matches!(c, '。' | '！' | '？')
}

/// What may follow a sentence's stop and still belong to the sentence.
fn is_closer(c: char) -> bool {
    matches!(
        c,
        '"' | '\''
            | '\u{2019}'
            | '\u{201d}'
            | '\u{bb}'
            | ')'
            | ']'
            | '」'
            | '』'
            | '）'
            | '*'
            | '_'
            | '~'
    )
}

/// The byte length of the longest prefix of `s` (not empty) of at most `limit` chars (at least 1)
/// that ends where [`may_break`] allows, or of exactly `limit` chars if no such place exists.
fn hard_cut(s: &str, limit: usize) -> usize {
    let mut iter = s.char_indices();
    let Some((_, mut prev)) = iter.next() else {
        return s.len();
    };
    // Regional indicators ending at the boundary looked at, which has `count` chars before it.
    let mut indicators = usize::from(is_regional_indicator(prev));
    let mut last_ok = None;
    for (count, (i, c)) in (1..).zip(iter) {
        let ok = may_break(prev, c, indicators);
        if count >= limit {
            return if ok { i } else { last_ok.unwrap_or(i) };
        }
        if ok {
            last_ok = Some(i);
        }
        indicators = if is_regional_indicator(c) {
            indicators + 1
        } else {
            0
        };
        prev = c;
    }
    s.len()
}

/// Whether a cut between `prev` and `next` keeps clusters whole, in the common cases: never before
/// a combining mark, variation selector, emoji modifier, tag or joiner, nor after a zero-width
/// joiner, nor inside a flag (a pair of regional indicators, `indicators` of them ending at `prev`)
/// nor between CR and LF.
fn may_break(prev: char, next: char, indicators: usize) -> bool {
    !(is_extend(next)
        || prev == '\u{200d}'
        || (prev == '\r' && next == '\n')
        || (is_regional_indicator(next) && indicators % 2 == 1))
}

fn is_extend(c: char) -> bool {
    matches!(c,
        '\u{0300}'..='\u{036f}'
        | '\u{0483}'..='\u{0489}'
        | '\u{0591}'..='\u{05bd}'
        | '\u{064b}'..='\u{065f}'
        | '\u{1ab0}'..='\u{1aff}'
        | '\u{1dc0}'..='\u{1dff}'
        | '\u{200c}'..='\u{200d}'
        | '\u{20d0}'..='\u{20ff}'
        | '\u{3099}'..='\u{309a}'
        | '\u{fe00}'..='\u{fe0f}'
        | '\u{fe20}'..='\u{fe2f}'
        | '\u{1f3fb}'..='\u{1f3ff}'
        | '\u{e0020}'..='\u{e007f}'
        | '\u{e0100}'..='\u{e01ef}')
}

fn is_regional_indicator(c: char) -> bool {
    matches!(c, '\u{1f1e6}'..='\u{1f1ff}')
}

/// The closed fenced code blocks of `text`: a line starting (after indentation) with three
/// backticks opens one, a line of only backticks closes it. A block never closed is none.
fn code_fences(text: &str) -> Vec<Range<usize>> {
    let mut fences = Vec::new();
    if !text.contains("```") {
        return fences;
    }
    let mut open = None;
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end();
        let content = body.trim_start();
        let at = line_start + (body.len() - content.len());
        if let Some(after) = content.strip_prefix("```") {
            match open {
                // "```code```" on one line is no block.
                None if !after.contains("```") => open = Some(at),
                Some(start) if after.bytes().all(|b| b == b'`') => {
                    fences.push(start..line_start + body.len());
                    open = None;
                }
                _ => {}
            }
        }
        line_start += line.len();
    }
    fences
}

#[cfg(test)]
mod tests {
    use super::{split_message as split, WHATSAPP_MAX_CHARS};

    fn len(s: &str) -> usize {
        s.chars().count()
    }

    fn non_space(s: &str) -> String {
        s.chars().filter(|c| !c.is_whitespace()).collect()
    }

    /// The invariants every split keeps.
    fn check(text: &str, max: usize) -> Vec<String> {
        let parts = split(text, max);
        let limit = if max == 0 {
            WHATSAPP_MAX_CHARS
        } else {
            max.min(WHATSAPP_MAX_CHARS)
        };
        for part in &parts {
            assert!(!part.trim().is_empty(), "empty part of {text:?} at {max}");
            assert!(
                len(part) <= limit,
                "part of {} > {limit}: {part:?}",
                len(part)
            );
        }
        let joined: String = parts.iter().map(|p| non_space(p)).collect();
        assert_eq!(joined, non_space(text), "lost or duplicated text at {max}");
        parts
    }

    /// A paragraph of `n` sentences, each "Sentence <p>.<i> says something useful here." style.
    fn paragraph(p: usize, n: usize) -> String {
        (0..n)
            .map(|i| format!("Sentence {p}.{i} says something rather useful about the order."))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn a_text_that_fits_is_one_part_unchanged() {
        let text = "  Hello!\n\nYour order is on its way.  ";
        assert_eq!(split(text, 1000), vec![text.to_owned()]);
        assert_eq!(split(text, 0), vec![text.to_owned()]);
        let exact = "x".repeat(50);
        assert_eq!(split(&exact, 50), vec![exact.clone()]);
    }

    #[test]
    fn a_blank_text_gives_no_part() {
        assert!(split("", 10).is_empty());
        assert!(split(" \n\t ", 10).is_empty());
        assert!(split(&" ".repeat(5000), 0).is_empty());
    }

    #[test]
    fn paragraphs_are_cut_at_their_ends() {
        let paragraphs: Vec<String> = (0..8).map(|p| paragraph(p, 6)).collect();
        let text = paragraphs.join("\n\n");
        assert!((2500..3500).contains(&len(&text)), "{}", len(&text));
        assert!(paragraphs.iter().all(|p| len(p) < 500));
        let parts = check(&text, 1000);
        assert!(parts.len() >= 3, "{}", parts.len());
        // Every part is whole paragraphs, and together they are the text.
        for part in &parts {
            assert!(part
                .split("\n\n")
                .all(|p| paragraphs.contains(&p.to_owned())));
        }
        assert_eq!(parts.join("\n\n"), text);
        // Greedy: no two neighbours would fit in one part.
        for pair in parts.windows(2) {
            assert!(len(&pair[0]) + 2 + len(&pair[1]) > 1000);
        }
    }

    #[test]
    fn a_long_paragraph_is_cut_at_sentence_ends() {
        let text = paragraph(1, 45);
        assert!(len(&text) >= 2500);
        let parts = check(&text, 1000);
        assert_eq!(parts.len(), 3);
        for part in &parts {
            assert!(part.starts_with("Sentence "), "{part:?}");
            assert!(part.ends_with("order."), "{part:?}");
        }
        assert_eq!(parts.join(" "), text);
    }

    #[test]
    fn sentence_ends_before_closing_quotes_and_in_cjk() {
        let text = "He said \"stop.\" Then we left. Ok";
        assert_eq!(check(text, 20), ["He said \"stop.\"", "Then we left. Ok"]);
        let text = "今日は晴れです。明日は雨です！「本当？」はい。";
        let parts = check(text, 10);
        assert_eq!(
            parts,
            ["今日は晴れです。", "明日は雨です！", "「本当？」はい。"]
        );
    }

    #[test]
    fn lines_come_before_sentences_and_words_before_letters() {
        let text = "First line here. More\nSecond line";
        assert_eq!(check(text, 25), ["First line here. More", "Second line"]);
        assert_eq!(check("alpha beta gamma", 11), ["alpha beta", "gamma"]);
    }

    #[test]
    fn a_long_word_is_cut_hard() {
        let word = "a".repeat(2500);
        let parts = check(&word, 1000);
        assert_eq!(
            parts.iter().map(|p| len(p)).collect::<Vec<_>>(),
            [1000, 1000, 500]
        );
        let url = format!("see https://example.com/{} now", "x".repeat(30));
        let parts = check(&url, 20);
        assert_eq!(parts[0], "see");
        assert_eq!(parts.last().map(String::as_str), Some("now"));
    }

    #[test]
    fn multi_byte_text_is_counted_in_chars() {
        let text = "Olá! Você já recebeu a confirmação? 😀👍🏽🇧🇷 日本語のテキストです。".repeat(40);
        for max in [1, 2, 3, 5, 7, 13, 50, 333] {
            check(&text, max);
        }
        // 300 emoji of 4 bytes fit in 300 chars.
        let emoji = "😀".repeat(300);
        assert_eq!(split(&emoji, 300), vec![emoji.clone()]);
        assert_eq!(check(&emoji, 100).len(), 3);
        let accents = "ação".repeat(100);
        assert!(check(&accents, 399).iter().all(|p| len(p) <= 399));
    }

    #[test]
    fn clusters_stay_whole_when_another_cut_fits() {
        // "e" + combining acute: never cut between them.
        let text = "e\u{301}".repeat(10);
        for part in check(&text, 3) {
            assert!(!part.starts_with('\u{301}'), "{part:?}");
        }
        // A skin-toned thumbs up and flags.
        let text = "👍🏽".repeat(5);
        assert!(check(&text, 3).iter().all(|p| len(p) == 2));
        let flags = "🇧🇷🇵🇹🇯🇵";
        assert_eq!(check(flags, 3), ["🇧🇷", "🇵🇹", "🇯🇵"]);
        // A family joined by ZWJ is longer than the limit: still cut, never lost.
        check("👨\u{200d}👩\u{200d}👧", 2);
    }

    #[test]
    fn no_limit_of_our_own_is_whatsapps() {
        let text = paragraph(0, 180);
        assert!(len(&text) >= 10_000);
        let parts = check(&text, 0);
        assert!(parts.len() >= 3);
        assert!(parts.iter().all(|p| len(p) <= WHATSAPP_MAX_CHARS));
        assert_eq!(check(&text, 50_000).len(), parts.len());
    }

    #[test]
    fn a_code_block_is_kept_whole() {
        let code = "```\nfn main() {\n    println!(\"hi\");\n\n    let x = 1;\n}\n```";
        let text = format!(
            "{}\n\nHere it is:\n{code}\n\n{}",
            paragraph(1, 3),
            paragraph(2, 3)
        );
        let parts = check(&text, 60);
        assert!(parts.iter().any(|p| p == code), "{parts:#?}");
        // Text on the line before the block packs with it when both fit.
        for max in [120, 200] {
            let parts = check(&text, max);
            let with_intro = format!("Here it is:\n{code}");
            assert!(parts.contains(&with_intro), "{parts:#?}");
        }
        // Too long for one part: cut inside, at its blank line first.
        let parts = check(code, 40);
        assert_eq!(parts[0], "```\nfn main() {\n    println!(\"hi\");");
    }

    #[test]
    fn parts_keep_every_character_across_lengths_and_limits() {
        let samples = [
            paragraph(3, 12),
            [
                paragraph(1, 2),
                paragraph(2, 5),
                "short".into(),
                paragraph(3, 1),
            ]
            .join("\n\n"),
            "word ".repeat(300),
            "a\n\n\n b \t c\r\n\r\nd. e! f? g… h。i！j？k".repeat(30),
            "x".repeat(777),
            "Olá 😀👍🏽 ação. 日本語。\n🇧🇷🇵🇹 e\u{301}\u{a0}x ".repeat(25),
            format!("intro\n```rust\n{}\n```\noutro", "let a = 1;\n".repeat(60)),
            "``` unclosed\n\n".repeat(20),
        ];
        for sample in &samples {
            let total = len(sample);
            let mut cut = 1;
            while cut <= total + 10 {
                let prefix: String = sample.chars().take(cut).collect();
                for max in [1, 2, 3, 4, 7, 10, 16, 31, 64, 100, 257, 1000, 5000] {
                    check(&prefix, max);
                }
                cut = cut * 3 / 2 + 1;
            }
        }
    }
}

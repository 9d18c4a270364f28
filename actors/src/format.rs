//! WhatsApp formatting of a model's answer (`format_for_whatsapp`): models answer in Markdown,
//! which WhatsApp shows as raw symbols. The answer is parsed with pulldown-cmark (CommonMark with
//! tables and strikethrough) and written in WhatsApp's own markup: `*bold*`, `_italic_`,
//! `~strike~`, `` `code` ``, ```` ``` ```` blocks, `- ` and `1. ` lists, `> ` quotes; headings
//! become bold lines, `[text](url)` becomes `text (url)`, tables become one line per row. Pure: no
//! I/O, the same text always gives the same message.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

/// The answer in WhatsApp's markup.
pub fn format_for_whatsapp(markdown: &str) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    let mut w = Writer::default();
    for event in Parser::new_ext(markdown, options) {
        w.event(event);
    }
    w.finish()
}

#[derive(Default)]
struct Writer {
    out: String,
    /// Open lists: the next number of an ordered one, `None` for a bulleted one.
    lists: Vec<Option<u64>>,
    /// Destinations of the open links and images.
    links: Vec<String>,
    /// Where the text of the innermost open link starts in `out`.
    link_text_at: Vec<usize>,
    /// Open block quotes.
    quotes: usize,
    /// The cells of the table row being written.
    cells: Vec<String>,
    in_cell: bool,
}

impl Writer {
    fn push(&mut self, text: &str) {
        if self.in_cell {
            if let Some(cell) = self.cells.last_mut() {
                cell.push_str(text);
            }
        } else {
            self.out.push_str(text);
        }
    }

    /// Ends the current line and starts a new one, with the quote marks of the open quotes.
    fn newline(&mut self) {
        self.out.push('\n');
        self.start_line();
    }

    fn start_line(&mut self) {
        for _ in 0..self.quotes {
            self.out.push_str("> ");
        }
    }

    /// Leaves one blank line after a block (none at the start, inside a list item, or in a quote
    /// where the marks carry the structure).
    fn end_block(&mut self) {
        if self.lists.is_empty() {
            self.newline();
            if self.quotes == 0 {
                self.newline();
            }
        }
    }

    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(text) => self.push(&text),
            Event::Code(code) => {
                self.push("`");
                self.push(&code);
                self.push("`");
            }
            Event::SoftBreak | Event::HardBreak => {
                if self.in_cell {
                    self.push(" ");
                } else {
                    self.newline();
                }
            }
            Event::Rule => {
                self.push("———");
                self.end_block();
            }
            Event::Html(html) | Event::InlineHtml(html) => self.push(&html),
            Event::TaskListMarker(done) => self.push(if done { "☑ " } else { "☐ " }),
            Event::FootnoteReference(name) => {
                self.push("[");
                self.push(&name);
                self.push("]");
            }
            Event::InlineMath(m) | Event::DisplayMath(m) => self.push(&m),
        }
    }

    fn start(&mut self, tag: Tag<'_>) {
        match tag {
            // A heading, whatever its level, is a bold line.
            Tag::Heading { .. } => self.push("*"),
            Tag::Emphasis => self.push("_"),
            Tag::Strong => self.push("*"),
            Tag::Strikethrough => self.push("~"),
            Tag::BlockQuote(_) => {
                self.quotes += 1;
                self.push("> ");
            }
            // Fenced or indented, a code block is a monospace block (its language is dropped).
            Tag::CodeBlock(_) => self.push("```\n"),
            Tag::List(start) => {
                if !self.lists.is_empty() {
                    // A nested list starts on the line after its parent item's text.
                    self.newline();
                }
                self.lists.push(start);
            }
            Tag::Item => {
                let depth = self.lists.len().saturating_sub(1);
                self.push(&"  ".repeat(depth));
                let marker = match self.lists.last_mut() {
                    Some(Some(n)) => {
                        let marker = format!("{n}. ");
                        *n += 1;
                        marker
                    }
                    _ => "- ".to_string(),
                };
                self.push(&marker);
            }
            Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. } => {
                self.links.push(dest_url.to_string());
                self.link_text_at.push(self.out.len());
            }
            Tag::Table(_) => {}
            Tag::TableHead => self.cells.clear(),
            Tag::TableRow => self.cells.clear(),
            Tag::TableCell => {
                self.in_cell = true;
                self.cells.push(String::new());
            }
            Tag::Paragraph
            | Tag::FootnoteDefinition(_)
            | Tag::HtmlBlock
            | Tag::DefinitionList
            | Tag::DefinitionListTitle
            | Tag::DefinitionListDefinition
            | Tag::MetadataBlock(_)
            | Tag::Superscript
            | Tag::Subscript => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Paragraph => self.end_block(),
            TagEnd::Heading(_) => {
                self.push("*");
                self.end_block();
            }
            TagEnd::Emphasis => self.push("_"),
            TagEnd::Strong => self.push("*"),
            TagEnd::Strikethrough => self.push("~"),
            TagEnd::BlockQuote(_) => {
                self.quotes = self.quotes.saturating_sub(1);
                self.end_block();
            }
            TagEnd::CodeBlock => {
                if !self.out.ends_with('\n') {
                    self.out.push('\n');
                }
                self.push("```");
                self.end_block();
            }
            TagEnd::List(_) => {
                self.lists.pop();
                if self.lists.is_empty() {
                    self.newline();
                }
            }
            TagEnd::Item => {
                if !self.out.ends_with('\n') {
                    self.newline();
                }
            }
            TagEnd::Link | TagEnd::Image => {
                let dest = self.links.pop().unwrap_or_default();
                let at = self.link_text_at.pop().unwrap_or(self.out.len());
                let text = self.out.get(at..).unwrap_or_default().trim().to_string();
                // A bare link (`<https://…>` or text equal to its address) is written once.
                let bare = text == dest || dest.strip_prefix("mailto:") == Some(text.as_str());
                if !dest.is_empty() && !bare {
                    self.push(if text.is_empty() { "" } else { " " });
                    self.push("(");
                    self.push(&dest);
                    self.push(")");
                }
            }
            TagEnd::TableHead => {
                let row: Vec<String> = self
                    .cells
                    .iter()
                    .map(|c| format!("*{}*", c.trim()))
                    .collect();
                self.write_row(&row);
            }
            TagEnd::TableRow => {
                let row: Vec<String> = self.cells.iter().map(|c| c.trim().to_string()).collect();
                self.write_row(&row);
            }
            TagEnd::TableCell => self.in_cell = false,
            TagEnd::Table => self.end_block(),
            TagEnd::FootnoteDefinition
            | TagEnd::HtmlBlock
            | TagEnd::DefinitionList
            | TagEnd::DefinitionListTitle
            | TagEnd::DefinitionListDefinition
            | TagEnd::MetadataBlock(_)
            | TagEnd::Superscript
            | TagEnd::Subscript => {}
        }
    }

    /// A table row as one line, its cells joined by ` | `.
    fn write_row(&mut self, cells: &[String]) {
        self.out.push_str(&cells.join(" | "));
        self.newline();
        self.cells.clear();
    }

    /// The text without trailing spaces on lines, and at most one blank line in a row.
    fn finish(self) -> String {
        let mut lines: Vec<&str> = Vec::new();
        for line in self.out.lines() {
            let line = line.trim_end();
            let blank = line.is_empty() || line == ">";
            if blank && lines.last().is_none_or(|l: &&str| l.is_empty()) {
                continue;
            }
            lines.push(if blank { "" } else { line });
        }
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::format_for_whatsapp as f;

    #[test]
    fn emphasis_becomes_whatsapp_markup() {
        assert_eq!(
            f("Our **blue** model is _in stock_, the ~~red~~ one is not."),
            "Our *blue* model is _in stock_, the ~red~ one is not."
        );
        assert_eq!(f("Use `--force` carefully"), "Use `--force` carefully");
    }

    #[test]
    fn headings_are_bold_lines_and_paragraphs_stay_apart() {
        assert_eq!(
            f("# Opening hours\n\nWe are open daily.\n\n## Holidays\nClosed on Sundays."),
            "*Opening hours*\n\nWe are open daily.\n\n*Holidays*\n\nClosed on Sundays."
        );
    }

    #[test]
    fn lists_keep_their_markers_and_nesting() {
        assert_eq!(
            f("You can:\n\n- pay by card\n- pay in cash\n  - euros\n  - dollars\n\n1. order\n2. pay"),
            "You can:\n\n- pay by card\n- pay in cash\n  - euros\n  - dollars\n\n1. order\n2. pay"
        );
        assert_eq!(f("3. third\n4. fourth"), "3. third\n4. fourth");
    }

    #[test]
    fn links_show_their_address() {
        assert_eq!(
            f("See [our shop](https://shop.example/blue) or <https://example.com>."),
            "See our shop (https://shop.example/blue) or https://example.com."
        );
        assert_eq!(
            f("![the blue model](https://img.example/b.png)"),
            "the blue model (https://img.example/b.png)"
        );
    }

    #[test]
    fn code_blocks_are_monospace_blocks() {
        assert_eq!(
            f("Run:\n\n```sh\ncurl -X POST x\n  --data y\n```\n\nDone."),
            "Run:\n\n```\ncurl -X POST x\n  --data y\n```\n\nDone."
        );
    }

    #[test]
    fn tables_become_one_line_per_row() {
        assert_eq!(
            f("| Size | Price |\n|---|---|\n| S | 10 € |\n| M | 12 € |\n\nAsk us!"),
            "*Size* | *Price*\nS | 10 €\nM | 12 €\n\nAsk us!"
        );
    }

    #[test]
    fn quotes_and_rules() {
        assert_eq!(f("> You said: blue\n\nYes."), "> You said: blue\n\nYes.");
        assert_eq!(f("one\n\n---\n\ntwo"), "one\n\n———\n\ntwo");
    }

    #[test]
    fn plain_text_is_left_as_it_is() {
        let plain = "Hi! Yes, we have it in blue.\nDelivery takes 2 days.";
        assert_eq!(f(plain), plain);
        assert_eq!(f(""), "");
        assert_eq!(f("   "), "");
    }
}

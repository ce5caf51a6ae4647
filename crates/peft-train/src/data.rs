//! Training data from JSONL and CSV files, in the shapes people have: chat `messages`
//! (OpenAI style, `role`/`content`), ShareGPT `conversations` (`from`/`value`), Alpaca
//! (`instruction`, `input`, `output`), `prompt`/`completion`, plain `text` (continued
//! pre-training), and `text` + `label` (classification, JSONL or CSV).
//!
//! A malformed line is an error naming its line; with `skip_bad`, such lines are skipped and
//! counted instead.

use std::path::Path;

use peft_core::{PeftError, Result};
use serde::{Deserialize, Serialize};

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text of the turn.
    pub content: String,
}

impl Message {
    /// A message from `role`.
    pub fn new(role: &str, content: &str) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

/// One training example.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A conversation; the last message (the assistant's) is the completion.
    Chat(Vec<Message>),
    /// A plain prompt and its completion.
    Completion {
        /// Text before the completion.
        prompt: String,
        /// The text to learn.
        completion: String,
    },
    /// Plain text, every token learned.
    Text(String),
    /// Text and its class.
    Labeled {
        /// The text.
        text: String,
        /// Its class, from 0.
        label: usize,
    },
}

/// A data file as read.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    /// The examples, in file order.
    pub records: Vec<Record>,
    /// Lines skipped (1-based) and why, when bad lines were allowed.
    pub skipped: Vec<(usize, String)>,
}

#[derive(Deserialize)]
struct ShareGptTurn {
    from: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Line {
    Messages { messages: Vec<Message> },
    ShareGpt { conversations: Vec<ShareGptTurn> },
    Alpaca { instruction: String, #[serde(default)] input: String, output: String },
    Completion { prompt: String, completion: String },
    Labeled { text: String, label: usize },
    Text { text: String },
}

/// The chat roles of ShareGPT's `from` field.
fn sharegpt_role(from: &str) -> Option<&'static str> {
    match from {
        "human" | "user" => Some("user"),
        "gpt" | "assistant" | "model" => Some("assistant"),
        "system" => Some("system"),
        _ => None,
    }
}

fn record(line: Line) -> std::result::Result<Record, String> {
    let chat = |messages: Vec<Message>| {
        if messages.last().is_none_or(|m| m.role != "assistant") {
            return Err("a conversation must end with an assistant message (the completion)".to_string());
        }
        Ok(Record::Chat(messages))
    };
    match line {
        Line::Messages { messages } => chat(messages),
        Line::ShareGpt { conversations } => chat(
            conversations
                .into_iter()
                .map(|t| sharegpt_role(&t.from).map(|role| Message::new(role, &t.value)).ok_or_else(|| format!("unknown ShareGPT speaker `{}`", t.from)))
                .collect::<std::result::Result<_, _>>()?,
        ),
        // LLaMA-Factory's Alpaca: the instruction, then the input on a new line.
        Line::Alpaca { instruction, input, output } => {
            let user = if input.is_empty() { instruction } else { format!("{instruction}\n{input}") };
            Ok(Record::Chat(vec![Message::new("user", &user), Message::new("assistant", &output)]))
        }
        Line::Completion { prompt, completion } => Ok(Record::Completion { prompt, completion }),
        Line::Labeled { text, label } => Ok(Record::Labeled { text, label }),
        Line::Text { text } => Ok(Record::Text(text)),
    }
}

/// Each line's number (1-based) and its record, or why it is not one.
type Lines = Vec<(usize, std::result::Result<Record, String>)>;

fn parse_jsonl(text: &str) -> Lines {
    let shapes = "expected one of: messages, conversations, instruction/input/output, prompt/completion, text/label, text";
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let parsed = match serde_json::from_str::<serde_json::Value>(l) {
                Err(e) => Err(format!("malformed JSON: {e}")),
                Ok(value) => serde_json::from_value::<Line>(value).map_err(|_| format!("unknown shape ({shapes})")).and_then(record),
            };
            (i + 1, parsed)
        })
        .collect()
}

fn parse_csv(text: &str) -> std::result::Result<Lines, String> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| format!("malformed CSV header: {e}"))?.clone();
    let column = |name: &str| headers.iter().position(|h| h == name).ok_or_else(|| format!("the CSV has no `{name}` column (it needs text,label)"));
    let (text_at, label_at) = (column("text")?, column("label")?);
    Ok(reader
        .records()
        .map(|row| {
            let line = row.as_ref().ok().and_then(|r| r.position()).map_or(0, |p| p.line() as usize);
            let parsed = row.map_err(|e| format!("malformed CSV: {e}")).and_then(|r| {
                let label = r.get(label_at).unwrap_or("").trim().parse::<usize>().map_err(|_| format!("label `{}` is not a class number", r.get(label_at).unwrap_or("")))?;
                Ok(Record::Labeled { text: r.get(text_at).unwrap_or("").to_string(), label })
            });
            (line, parsed)
        })
        .collect())
}

impl Dataset {
    /// Reads a `.jsonl` or `.csv` file. Without `skip_bad`, the first bad line is an error
    /// naming it; with it, bad lines are counted in `skipped`. An empty result is an error.
    pub fn read(path: &Path, skip_bad: bool) -> Result<Self> {
        let name = path.display().to_string();
        let text = peft_core::checkpoint::read_text(path)?;
        let lines = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
            parse_csv(&text).map_err(|reason| PeftError::InvalidConfig(format!("{name}: {reason}")))?
        } else {
            parse_jsonl(&text)
        };
        let mut data = Self::default();
        for (line, parsed) in lines {
            match parsed {
                Ok(record) => data.records.push(record),
                Err(reason) if skip_bad => data.skipped.push((line, reason)),
                Err(reason) => return Err(PeftError::InvalidConfig(format!("{name}:{line}: {reason} (skip bad lines with --skip-bad-lines)"))),
            }
        }
        if data.records.is_empty() {
            return Err(PeftError::InvalidConfig(format!("{name} holds no usable example")));
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_reads_and_bad_lines_are_named() {
        let lines = [
            r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}"#,
            r#"{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}"#,
            r#"{"instruction": "Greet.", "input": "politely", "output": "Good day."}"#,
            r#"{"prompt": "2+2=", "completion": "4"}"#,
            r#"{"text": "plain", "label": 1}"#,
            r#"{"text": "plain"}"#,
        ];
        let parsed: Vec<Record> = parse_jsonl(&lines.join("\n")).into_iter().map(|(_, r)| r.unwrap()).collect();
        let hello = Record::Chat(vec![Message::new("user", "hi"), Message::new("assistant", "hello")]);
        assert_eq!(parsed[0], hello);
        assert_eq!(parsed[1], hello);
        assert_eq!(parsed[2], Record::Chat(vec![Message::new("user", "Greet.\npolitely"), Message::new("assistant", "Good day.")]));
        assert_eq!(parsed[3], Record::Completion { prompt: "2+2=".into(), completion: "4".into() });
        assert_eq!(parsed[4], Record::Labeled { text: "plain".into(), label: 1 });
        assert_eq!(parsed[5], Record::Text("plain".into()));
        let bad = parse_jsonl("{\"text\": \"a\"}\n{\"nope\": 1}\n\n{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}]}\n{\"text\": ");
        let errors: Vec<(usize, String)> = bad.into_iter().filter_map(|(l, r)| r.err().map(|e| (l, e))).collect();
        assert_eq!(errors.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [2, 4, 5]);
        assert!(errors[0].1.contains("unknown shape") && errors[1].1.contains("assistant") && errors[2].1.contains("malformed JSON"), "{errors:?}");
        let csv = parse_csv("text,label\n\"a, b\",1\nc,x\n").unwrap();
        assert_eq!(csv[0].1, Ok(Record::Labeled { text: "a, b".into(), label: 1 }));
        assert!(csv[1].1.as_ref().is_err_and(|e| e.contains("`x`")));
        assert!(parse_csv("sentence,label\nx,1\n").is_err());
    }
}

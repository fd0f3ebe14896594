//! A YAML tree that remembers where every node came from, so playbook
//! errors can name a line and column (serde stops at the first problem and
//! forgets positions once a value is built).

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(String),
    Seq(Vec<Node>),
    /// Keys keep their own position for "unknown key" errors.
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub line: usize,
    pub col: usize,
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Scalar(_) => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

#[derive(Default)]
struct Builder {
    stack: Vec<Node>,
    /// For a mapping on the stack: a key waiting for its value.
    pending_keys: Vec<Option<Node>>,
    root: Option<Node>,
    anchors_used: bool,
}

impl Builder {
    fn push_value(&mut self, node: Node) {
        let Some(top) = self.stack.last_mut() else {
            if self.root.is_none() {
                self.root = Some(node);
            }
            return;
        };
        match &mut top.value {
            Value::Seq(items) => items.push(node),
            Value::Map(entries) => {
                let slot = self.pending_keys.last_mut();
                match slot {
                    Some(slot @ None) => *slot = Some(node),
                    Some(slot) => {
                        if let Some(key) = slot.take() {
                            entries.push((key, node));
                        }
                    }
                    None => {}
                }
            }
            Value::Scalar(_) => {}
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let at = |value| Node {
            value,
            line: mark.line(),
            col: mark.col() + 1,
        };
        match ev {
            Event::Scalar(s, ..) => self.push_value(at(Value::Scalar(s))),
            Event::SequenceStart(..) => {
                self.stack.push(at(Value::Seq(Vec::new())));
                self.pending_keys.push(None);
            }
            Event::MappingStart(..) => {
                self.stack.push(at(Value::Map(Vec::new())));
                self.pending_keys.push(None);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.pending_keys.pop();
                if let Some(mut node) = self.stack.pop() {
                    // A block mapping's start mark sits on its first `:`;
                    // people expect the first key.
                    if let Value::Map(entries) = &node.value {
                        if let Some((k, _)) = entries.first() {
                            (node.line, node.col) = (k.line, k.col);
                        }
                    }
                    self.push_value(node);
                }
            }
            Event::Alias(_) => self.anchors_used = true,
            _ => {}
        }
    }
}

/// Parses one YAML document. An empty document is an empty mapping.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut b = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut b, false).map_err(|e| SyntaxError {
        line: e.marker().line(),
        col: e.marker().col() + 1,
        message: e.info().to_string(),
    })?;
    if b.anchors_used {
        return Err(SyntaxError {
            line: 1,
            col: 1,
            message: "YAML aliases are not supported in playbooks".to_string(),
        });
    }
    Ok(b.root.unwrap_or(Node {
        value: Value::Map(Vec::new()),
        line: 1,
        col: 1,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_lines_and_columns() {
        let n = parse("a: 1\nb:\n  - x\n  - {c: d}\n").unwrap();
        let Value::Map(m) = &n.value else { panic!() };
        assert_eq!(m[0].0.as_str(), Some("a"));
        assert_eq!((m[0].0.line, m[0].0.col), (1, 1));
        assert_eq!((m[0].1.line, m[0].1.col), (1, 4));
        let Value::Seq(items) = &m[1].1.value else {
            panic!()
        };
        assert_eq!((items[0].line, items[0].col), (3, 5));
        let Value::Map(inner) = &items[1].value else {
            panic!()
        };
        assert_eq!(inner[0].1.as_str(), Some("d"));
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.line >= 1, "{e:?}");
    }
}

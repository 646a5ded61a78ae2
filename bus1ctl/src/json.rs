//! A small JSON writer: values are built as a tree and printed with
//! two-space indentation. Numbers are integers; IDs and offsets, which
//! can use all 64 bits, are written as hex strings by the callers.

use std::fmt::Write as _;

pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
}

impl Json {
    /// An object from (key, value) pairs.
    pub fn obj(fields: Vec<(&'static str, Json)>) -> Json {
        Json::Obj(fields)
    }

    pub fn str(s: impl Into<String>) -> Json {
        Json::Str(s.into())
    }

    /// A 64-bit identifier as "0x…".
    pub fn hex(v: u64) -> Json {
        Json::Str(format!("{v:#x}"))
    }

    pub fn opt_hex(v: Option<u64>) -> Json {
        v.map_or(Json::Null, Json::hex)
    }

    pub fn opt_uint(v: Option<u64>) -> Json {
        v.map_or(Json::Null, Json::UInt)
    }

    /// The text of the value, ending in a newline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out.push('\n');
        out
    }

    fn write(&self, out: &mut String, depth: usize) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(v) => {
                let _ = write!(out, "{v}");
            }
            Json::UInt(v) => {
                let _ = write!(out, "{v}");
            }
            Json::Str(s) => quote(out, s),
            Json::Arr(items) if items.is_empty() => out.push_str("[]"),
            Json::Obj(fields) if fields.is_empty() => out.push_str("{}"),
            Json::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    out.push_str(if i == 0 { "\n" } else { ",\n" });
                    indent(out, depth + 1);
                    v.write(out, depth + 1);
                }
                out.push('\n');
                indent(out, depth);
                out.push(']');
            }
            Json::Obj(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    out.push_str(if i == 0 { "\n" } else { ",\n" });
                    indent(out, depth + 1);
                    quote(out, k);
                    out.push_str(": ");
                    v.write(out, depth + 1);
                }
                out.push('\n');
                indent(out, depth);
                out.push('}');
            }
        }
    }
}

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

/// `s` as a JSON string: quotes, backslashes and control characters
/// escaped (paths may hold any byte but NUL; they arrive here lossily
/// converted to UTF-8).
fn quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::Json;

    #[test]
    fn values_render_as_json() {
        let v = Json::obj(vec![
            ("a", Json::UInt(1)),
            ("b", Json::Arr(vec![Json::Bool(true), Json::Null, Json::Int(-2)])),
            ("c", Json::str("x\"y\\z\n\u{1}")),
            ("d", Json::Arr(vec![])),
            ("e", Json::obj(vec![])),
            ("f", Json::hex(0xb)),
        ]);
        assert_eq!(
            v.render(),
            "{\n  \"a\": 1,\n  \"b\": [\n    true,\n    null,\n    -2\n  ],\n  \"c\": \"x\\\"y\\\\z\\n\\u0001\",\n  \"d\": [],\n  \"e\": {},\n  \"f\": \"0xb\"\n}\n"
        );
    }
}

//! A small deterministic YAML emitter for JSON values: block style, two-space indentation,
//! object keys in the order serde_json gives them, sequences indented under their key.
//!
//! A string is written plain only when every YAML 1.1 and 1.2 reader takes it back as that
//! string; otherwise it is double-quoted (JSON-style escapes, which YAML shares), or, when it
//! spans lines and nothing in it needs escaping, written as a literal block (`|` or `|-`).

use serde_json::Value;

/// The YAML of one document (no `---`), ending with a newline.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_mapping(&mut out, map, 0, false),
        Value::Array(items) if !items.is_empty() => write_sequence(&mut out, items, 0, false),
        scalar => {
            out.push_str(&inline(scalar, 0));
            out.push('\n');
        }
    }
    out
}

/// Writes each entry at `indent`; with `continued`, the first one follows text already on the
/// line (a sequence's `- `).
fn write_mapping(
    out: &mut String,
    map: &serde_json::Map<String, Value>,
    indent: usize,
    continued: bool,
) {
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 || !continued {
            push_indent(out, indent);
        }
        out.push_str(&string(key, None));
        out.push(':');
        match value {
            Value::Object(inner) if !inner.is_empty() => {
                out.push('\n');
                write_mapping(out, inner, indent + 2, false);
            }
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                write_sequence(out, items, indent + 2, false);
            }
            scalar => {
                out.push(' ');
                out.push_str(&inline(scalar, indent + 2));
                out.push('\n');
            }
        }
    }
}

/// Writes each item as `- ` at `indent`; with `continued`, the first one follows text already
/// on the line.
fn write_sequence(out: &mut String, items: &[Value], indent: usize, continued: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !continued {
            push_indent(out, indent);
        }
        out.push_str("- ");
        match item {
            Value::Object(inner) if !inner.is_empty() => {
                write_mapping(out, inner, indent + 2, true)
            }
            Value::Array(inner) if !inner.is_empty() => {
                write_sequence(out, inner, indent + 2, true)
            }
            scalar => {
                out.push_str(&inline(scalar, indent + 2));
                out.push('\n');
            }
        }
    }
}

fn push_indent(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// A scalar or an empty collection as it follows `key: ` or `- `; a literal block's lines are
/// indented by `block_indent`.
fn inline(value: &Value, block_indent: usize) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n),
        Value::String(s) => string(s, Some(block_indent)),
        Value::Array(_) => "[]".to_owned(),
        Value::Object(_) => "{}".to_owned(),
    }
}

/// Integers as they are; floats always with a `.` and a signed exponent, which YAML 1.1 readers
/// (PyYAML) need to see a float: `1e300` would be read as a string there.
fn number(n: &serde_json::Number) -> String {
    let text = n.to_string();
    if n.is_f64() {
        let (mantissa, exponent) = match text.split_once(['e', 'E']) {
            Some((m, e)) => (m.to_owned(), Some(e.to_owned())),
            None => (text.clone(), None),
        };
        let mantissa = if mantissa.contains('.') {
            mantissa
        } else {
            format!("{mantissa}.0")
        };
        return match exponent {
            Some(e) if e.starts_with(['-', '+']) => format!("{mantissa}e{e}"),
            Some(e) => format!("{mantissa}e+{e}"),
            None => mantissa,
        };
    }
    text
}

/// A string: plain when safe, else a literal block (only when `block_indent` is given, for a
/// value rather than a key), else double-quoted.
fn string(s: &str, block_indent: Option<usize>) -> String {
    if plain_is_safe(s) {
        return s.to_owned();
    }
    if let Some(indent) = block_indent {
        if let Some(block) = literal_block(s, indent) {
            return block;
        }
    }
    double_quoted(s)
}

/// Characters a YAML reader takes as they are: printable ASCII and tab-free printable Unicode,
/// without the YAML 1.1 line breaks (NEL, LS, PS), the BOM and the C1 controls.
fn printable(c: char) -> bool {
    matches!(c, ' '..='~')
        || (c >= '\u{a0}'
            && !matches!(
                c,
                '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
            ))
}

/// Words that YAML 1.1 or 1.2 resolves to null or a boolean, in any case.
const RESERVED: &[&str] = &[
    "null", "~", "true", "false", "yes", "no", "on", "off", "y", "n", "=", "<<",
];

fn plain_is_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false; // the empty string is null
    };
    if !s.chars().all(printable) || s.starts_with(' ') || s.ends_with(' ') {
        return false;
    }
    // Indicators that start something other than a plain scalar (or may: `-`, `?`, `:`).
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) {
        return false;
    }
    // A mapping value, a comment, or a key.
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') {
        return false;
    }
    if RESERVED.iter().any(|word| s.eq_ignore_ascii_case(word)) {
        return false;
    }
    if [".inf", ".nan", "+.inf"]
        .iter()
        .any(|word| s.eq_ignore_ascii_case(word))
    {
        return false;
    }
    // Numbers (1, 0x1F, 0o17, 1_000, 1:20 sexagesimal, 1e3), timestamps (2001-12-14), .5, +1:
    // anything that starts like one is quoted.
    let next = s.chars().nth(1).unwrap_or(' ');
    !(first.is_ascii_digit()
        || (matches!(first, '.' | '+') && (next.is_ascii_digit() || next == '.')))
}

/// A literal block (`|` keeping one final newline, `|-` keeping none) when every line reads
/// back as it is: no escapes needed, no tab, no trailing space, a first line that is not empty
/// and does not start with a space (the block's indentation is read from it).
fn literal_block(s: &str, indent: usize) -> Option<String> {
    let (body, header) = match s.strip_suffix('\n') {
        Some(body) if !body.ends_with('\n') => (body, "|"),
        Some(_) => return None,
        None => (s, "|-"),
    };
    if !body.contains('\n') {
        return None;
    }
    let lines: Vec<&str> = body.split('\n').collect();
    let first = lines[0];
    if first.is_empty() || first.starts_with(' ') {
        return None;
    }
    if lines
        .iter()
        .any(|line| line.ends_with(' ') || !line.chars().all(printable))
    {
        return None;
    }
    let mut out = header.to_owned();
    for line in lines {
        out.push('\n');
        if !line.is_empty() {
            out.extend(std::iter::repeat_n(' ', indent));
            out.push_str(line);
        }
    }
    Some(out)
}

fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if printable(c) => out.push(c),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::to_yaml;
    use serde_json::json;

    fn value_of(s: &str) -> String {
        to_yaml(&json!({ "k": s }))
    }

    #[test]
    fn strings_yaml_would_read_as_something_else_are_quoted() {
        for (s, want) in [
            ("true", r#"k: "true""#),
            ("True", r#"k: "True""#),
            ("no", r#"k: "no""#),
            ("off", r#"k: "off""#),
            ("y", r#"k: "y""#),
            ("null", r#"k: "null""#),
            ("~", r#"k: "~""#),
            ("1", r#"k: "1""#),
            ("0.8", r#"k: "0.8""#),
            ("1e3", r#"k: "1e3""#),
            ("0x1F", r#"k: "0x1F""#),
            ("1:20", r#"k: "1:20""#),
            ("2001-12-14", r#"k: "2001-12-14""#),
            (".5", r#"k: ".5""#),
            (".inf", r#"k: ".inf""#),
            ("+1", r#"k: "+1""#),
            ("", r#"k: """#),
            (":", r#"k: ":""#),
            ("a: b", r#"k: "a: b""#),
            ("ends with:", r#"k: "ends with:""#),
            ("#", r##"k: "#""##),
            ("a #b", r##"k: "a #b""##),
            ("- item", r#"k: "- item""#),
            ("*alias", r#"k: "*alias""#),
            ("!tag", r#"k: "!tag""#),
            ("'single'", r#"k: "'single'""#),
            ("\"double\"", r#"k: "\"double\"""#),
            ("{a}", r#"k: "{a}""#),
            ("[a]", r#"k: "[a]""#),
            ("@at", r#"k: "@at""#),
            ("...", r#"k: "...""#),
            ("  leading spaces", r#"k: "  leading spaces""#),
            ("trailing space ", r#"k: "trailing space ""#),
            ("tab\there", r#"k: "tab\there""#),
            ("back\\slash\u{7}", r#"k: "back\\slash\u0007""#),
            ("line\u{2028}separator", r#"k: "line\u2028separator""#),
        ] {
            assert_eq!(value_of(s), format!("{want}\n"), "{s:?}");
        }
    }

    #[test]
    fn ordinary_strings_stay_plain() {
        for s in [
            "FiskilToken",
            "fiskil-token-refresher.io",
            ".spec.secretRef.name",
            "isURL(self) && url(self).getScheme() == 'https'",
            "self == oldSelf",
            "The Secret's name, e.g. a#b or a:b.",
            "über",
            "x-kubernetes-validations",
        ] {
            assert_eq!(value_of(s), format!("k: {s}\n"), "{s:?}");
        }
    }

    #[test]
    fn multi_line_strings_are_literal_blocks_unless_they_need_escapes() {
        assert_eq!(
            to_yaml(&json!({"a": {"description": "First line.\n\n  indented: #x"}})),
            "a:\n  description: |-\n    First line.\n\n      indented: #x\n"
        );
        assert_eq!(to_yaml(&json!({"k": "one\ntwo\n"})), "k: |\n  one\n  two\n");
        assert_eq!(to_yaml(&json!(["one\ntwo"])), "- |-\n  one\n  two\n");
        for (s, want) in [
            (" leading\nspace", r#"" leading\nspace""#),
            ("\nfirst empty", r#""\nfirst empty""#),
            ("trailing \nspace", r#""trailing \nspace""#),
            ("two\nnewlines\n\n", r#""two\nnewlines\n\n""#),
            ("a\tb\nc", r#""a\tb\nc""#),
            ("a\r\nb", r#""a\r\nb""#),
        ] {
            assert_eq!(value_of(s), format!("k: {want}\n"), "{s:?}");
        }
        // Keys are never blocks.
        assert_eq!(to_yaml(&json!({"a\nb": 1})), "\"a\\nb\": 1\n");
    }

    #[test]
    fn block_style_collections_and_scalars() {
        let doc = json!({
            "b": [{"x": 1, "y": [true, null]}, [1, 2], [], {}, "s"],
            "e": {},
            "f": 0.5,
            "g": 1e300,
            "h": -2.5e-7,
            "n": -3,
            "true": "key quoted"
        });
        assert_eq!(
            to_yaml(&doc),
            // y and n are YAML 1.1 booleans, as keys too.
            "b:\n  - x: 1\n    \"y\":\n      - true\n      - null\n  - - 1\n    - 2\n  - []\n  - {}\n  - s\n\
             e: {}\nf: 0.5\ng: 1.0e+300\nh: -2.5e-7\n\"n\": -3\n\"true\": key quoted\n"
        );
        assert_eq!(to_yaml(&json!("top")), "top\n");
        assert_eq!(to_yaml(&json!({})), "{}\n");
    }
}

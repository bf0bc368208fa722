//! Plain-text tables for people: one header line, columns padded to the
//! widest cell.

use serde_json::Value;

/// Renders `rows` under `headers`.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(headers.to_vec())];
    out.extend(rows.iter().map(|r| line(r.iter().map(String::as_str).collect())));
    out.join("\n")
}

/// A field as text: strings as they are, null as `-`, arrays joined.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}

/// `fields` of each object in `items` as table rows.
pub fn rows(items: &Value, fields: &[&str]) -> Vec<Vec<String>> {
    items
        .as_array()
        .map(|a| a.iter().map(|i| fields.iter().map(|f| text(&i[*f])).collect()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let items = serde_json::json!([{"id": "a", "name": "lab camera", "x": null}, {"id": "bbbb", "name": "n", "x": ["p", "q"]}]);
        let out = render(&["ID", "NAME", "X"], &rows(&items, &["id", "name", "x"]));
        assert_eq!(out, "ID    NAME        X\na     lab camera  -\nbbbb  n           p q");
    }
}

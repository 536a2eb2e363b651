//! Just enough CSV (RFC 4180) for device lists exported from a spreadsheet or
//! a management system: quoted fields with commas, doubled quotes and line
//! breaks, CRLF or LF, a UTF-8 byte-order mark. Fields are trimmed. And the
//! other way, one line of output for `hedgerow log search --format csv`.

/// One record and the line it starts on (1-based).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CsvRecord {
    pub line: usize,
    pub fields: Vec<String>,
}

/// Splits `text` into records; blank lines are skipped. An unterminated
/// quote runs to the end of the text, and is reported on its record.
pub(crate) fn parse(text: &str) -> Vec<Result<CsvRecord, (usize, String)>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while chars.peek().is_some() {
        let start = line;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut in_quotes = false;
        loop {
            let Some(c) = chars.next() else {
                if in_quotes {
                    records.push(Err((start, "a quoted field is never closed".to_string())));
                    return records;
                }
                break;
            };
            if in_quotes {
                match c {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    '"' => in_quotes = false,
                    '\n' => {
                        line += 1;
                        field.push('\n');
                    }
                    _ => field.push(c),
                }
                continue;
            }
            match c {
                ',' => fields.push(finish(&mut field, &mut quoted)),
                '"' if field.trim().is_empty() && !quoted => {
                    field.clear();
                    quoted = true;
                    in_quotes = true;
                }
                '\r' if chars.peek() == Some(&'\n') => {}
                '\n' => {
                    line += 1;
                    break;
                }
                _ => field.push(c),
            }
        }
        fields.push(finish(&mut field, &mut quoted));
        if fields.len() == 1 && fields[0].is_empty() {
            continue;
        }
        records.push(Ok(CsvRecord { line: start, fields }));
    }
    records
}

fn finish(field: &mut String, quoted: &mut bool) -> String {
    let value = if *quoted { std::mem::take(field) } else { std::mem::take(field).trim().to_string() };
    *quoted = false;
    value.trim().to_string()
}

/// One CSV line: a field with a comma, quote or line break is quoted, with
/// its quotes doubled.
pub fn format_record<S: AsRef<str>>(fields: &[S]) -> String {
    let mut line = String::new();
    for (index, field) in fields.iter().enumerate() {
        if index > 0 {
            line.push(',');
        }
        let field = field.as_ref();
        if field.contains([',', '"', '\n', '\r']) {
            line.push('"');
            line.push_str(&field.replace('"', "\"\""));
            line.push('"');
        } else {
            line.push_str(field);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Vec<(usize, Vec<String>)> {
        parse(text).into_iter().map(|record| record.map(|r| (r.line, r.fields)).unwrap()).collect()
    }

    #[test]
    fn plain_and_quoted_fields() {
        let text = "\u{feff}ip,name\r\n10.0.0.1, Library PC \r\n\r\n\"10.0.0.2\",\"Smith, Jane \"\"JS\"\"\"\n";
        assert_eq!(
            ok(text),
            vec![
                (1, vec!["ip".into(), "name".into()]),
                (2, vec!["10.0.0.1".into(), "Library PC".into()]),
                (4, vec!["10.0.0.2".into(), "Smith, Jane \"JS\"".into()]),
            ]
        );
    }

    #[test]
    fn line_breaks_inside_quotes_keep_line_numbers() {
        let records = ok("a,\"two\nlines\"\nb,c\n");
        assert_eq!(records[0], (1, vec!["a".into(), "two\nlines".into()]));
        assert_eq!(records[1], (3, vec!["b".into(), "c".into()]));
    }

    #[test]
    fn formatted_records_parse_back() {
        let fields = ["plain", "with, comma", "say \"hi\"", "two\nlines", ""];
        let line = format_record(&fields);
        assert_eq!(line, "plain,\"with, comma\",\"say \"\"hi\"\"\",\"two\nlines\",");
        assert_eq!(ok(&line), vec![(1, fields.iter().map(|f| f.to_string()).collect())]);
    }

    #[test]
    fn an_unclosed_quote_is_reported() {
        let records = parse("a,b\nc,\"d\n");
        assert!(records[0].is_ok());
        assert_eq!(records[1], Err((2, "a quoted field is never closed".to_string())));
    }
}

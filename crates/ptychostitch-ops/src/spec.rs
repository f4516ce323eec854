//! An operator's parameters as the Python declaration writes them (`Declared.spec()`):
//! `name=repr(value)` pairs joined by `;`, each value a Python literal -- an int, a float, a
//! string, `True`/`False`/`None`, or a list or tuple of those. Read here because a custom call
//! runs with no Python to evaluate them.

/// One literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
    None,
    List(Vec<Value>),
}

/// The parsed parameters, by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec(Vec<(String, Value)>);

type Parsed<T> = Result<T, String>;

impl Spec {
    pub fn parse(text: &str) -> Parsed<Self> {
        let mut items = Vec::new();
        if text.is_empty() {
            return Ok(Self(items));
        }
        for item in text.split(';') {
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| format!("spec item {item:?} is not name=value"))?;
            let mut parser = Parser {
                text: value.as_bytes(),
                at: 0,
            };
            let v = parser.value()?;
            parser.blanks();
            if parser.at != parser.text.len() {
                return Err(format!("spec value {value:?} has trailing text"));
            }
            items.push((name.to_string(), v));
        }
        Ok(Self(items))
    }

    pub fn get(&self, name: &str) -> Parsed<&Value> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or_else(|| format!("the operator's spec lacks {name}"))
    }

    pub fn int(&self, name: &str) -> Parsed<i64> {
        match self.get(name)? {
            Value::Int(i) => Ok(*i),
            other => Err(format!("{name} must be an integer, not {other:?}")),
        }
    }

    pub fn count(&self, name: &str) -> Parsed<usize> {
        usize::try_from(self.int(name)?).map_err(|_| format!("{name} must not be negative"))
    }

    pub fn float(&self, name: &str) -> Parsed<f64> {
        float(name, self.get(name)?)
    }

    pub fn text(&self, name: &str) -> Parsed<&str> {
        match self.get(name)? {
            Value::Str(s) => Ok(s),
            other => Err(format!("{name} must be a string, not {other:?}")),
        }
    }

    pub fn flag(&self, name: &str) -> Parsed<bool> {
        match self.get(name)? {
            Value::Bool(b) => Ok(*b),
            other => Err(format!("{name} must be True or False, not {other:?}")),
        }
    }

    /// `name` when present and not None.
    pub fn optional(&self, name: &str) -> Parsed<Option<&Value>> {
        Ok(match self.get(name)? {
            Value::None => None,
            v => Some(v),
        })
    }
}

/// A real number (an int counts).
pub fn float(name: &str, value: &Value) -> Parsed<f64> {
    match value {
        Value::Float(f) => Ok(*f),
        Value::Int(i) => Ok(*i as f64),
        other => Err(format!("{name} must be a number, not {other:?}")),
    }
}

struct Parser<'a> {
    text: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn blanks(&mut self) {
        while self.text.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn value(&mut self) -> Parsed<Value> {
        self.blanks();
        match self.text.get(self.at) {
            Some(b'\'' | b'"') => self.string(),
            Some(b'[' | b'(') => self.list(),
            Some(_) => self.word(),
            None => Err("a spec value is empty".into()),
        }
    }

    fn string(&mut self) -> Parsed<Value> {
        let quote = self.text[self.at];
        let start = self.at + 1;
        let end = self.text[start..]
            .iter()
            .position(|&c| c == quote)
            .map(|i| start + i)
            .ok_or("an unterminated string in the spec")?;
        let body = &self.text[start..end];
        if body.contains(&b'\\') {
            return Err("escapes are not supported in spec strings".into());
        }
        self.at = end + 1;
        Ok(Value::Str(String::from_utf8_lossy(body).into_owned()))
    }

    fn list(&mut self) -> Parsed<Value> {
        let close = if self.text[self.at] == b'[' {
            b']'
        } else {
            b')'
        };
        self.at += 1;
        let mut items = Vec::new();
        loop {
            self.blanks();
            if self.text.get(self.at) == Some(&close) {
                self.at += 1;
                return Ok(Value::List(items));
            }
            items.push(self.value()?);
            self.blanks();
            match self.text.get(self.at) {
                Some(b',') => self.at += 1,
                Some(c) if *c == close => {}
                _ => return Err("a malformed list in the spec".into()),
            }
        }
    }

    fn word(&mut self) -> Parsed<Value> {
        let start = self.at;
        while self
            .text
            .get(self.at)
            .is_some_and(|c| !matches!(c, b',' | b']' | b')') && !c.is_ascii_whitespace())
        {
            self.at += 1;
        }
        let word = std::str::from_utf8(&self.text[start..self.at]).map_err(|e| e.to_string())?;
        Ok(match word {
            "True" => Value::Bool(true),
            "False" => Value::Bool(false),
            "None" => Value::None,
            _ => match word.parse::<i64>() {
                Ok(i) => Value::Int(i),
                Err(_) => Value::Float(
                    word.parse::<f64>()
                        .map_err(|_| format!("{word:?} is not a literal"))?,
                ),
            },
        })
    }
}

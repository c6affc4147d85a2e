//! Where a Lua 5.1 chunk names a global, found by a lexer that skips strings and comments, so
//! FUNCTION LOAD's code can be confined (see [`super::functions`]). It never runs or parses
//! anything beyond tokens.
//!
//! Why tokens are enough: while a library loads, Redis 7 and Valkey 9 run its code with globals
//! that hold `redis` (and Valkey's alias `server`) and nothing else — no `_G`, `getfenv`,
//! `rawget`, `loadstring`, `setmetatable` (checked on both; each is a "nonexistent global
//! variable" error there). `redis.register_function` is callable only then. So the code can reach
//! it only through a token `redis` or `server` that is not a field name (`x.redis`); if every
//! such token is followed by `.` and a name, each use is visible here, and rewriting the
//! `register_function` ones leaves no other way (an alias `local r = redis`, an index
//! `redis['register_function']`, a parameter or local named `redis`, all fail the rule).

/// A use of one of the watched globals: `name` is the token (`redis`), `field` the name after its
/// `.` if there is one, `span` the bytes from the token to the end of that name (comments and
/// whitespace between included), `line` 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use<'a> {
    pub name: &'a [u8],
    pub field: Option<&'a [u8]>,
    pub span: std::ops::Range<usize>,
    pub line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Name,
    Dot,
    Colon,
    Other,
}

struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    line: usize,
}

impl<'a> Lexer<'a> {
    /// The level of a long bracket (`[==[` is 2) opening at `pos`, if one does.
    fn long_open(&self, pos: usize) -> Option<usize> {
        let s = self.src;
        if s.get(pos) != Some(&b'[') {
            return None;
        }
        let mut i = pos + 1;
        while s.get(i) == Some(&b'=') {
            i += 1;
        }
        (s.get(i) == Some(&b'[')).then_some(i - pos - 1)
    }

    fn advance(&mut self, n: usize) {
        let end = (self.pos + n).min(self.src.len());
        self.line += self.src[self.pos..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.pos = end;
    }

    /// Skip a long bracket of `level` opening here, to just past its close (or the end).
    fn skip_long(&mut self, level: usize) {
        let mut close = vec![b']'];
        close.extend(std::iter::repeat_n(b'=', level));
        close.push(b']');
        let from = self.pos + level + 2;
        let end = self.src[from.min(self.src.len())..]
            .windows(close.len())
            .position(|w| w == close.as_slice())
            .map_or(self.src.len(), |i| from + i + close.len());
        self.advance(end - self.pos);
    }

    /// Skip whitespace and comments.
    fn skip_blank(&mut self) {
        while let Some(&b) = self.src.get(self.pos) {
            if b.is_ascii_whitespace() {
                self.advance(1);
            } else if self.src[self.pos..].starts_with(b"--") {
                self.advance(2);
                match self.long_open(self.pos) {
                    Some(level) => self.skip_long(level),
                    None => {
                        let end = self.src[self.pos..]
                            .iter()
                            .position(|&c| c == b'\n')
                            .map_or(self.src.len(), |i| self.pos + i);
                        self.advance(end - self.pos);
                    }
                }
            } else {
                return;
            }
        }
    }

    /// The next token and where it starts, or `None` at the end.
    fn next(&mut self) -> Option<(Tok, usize, usize)> {
        self.skip_blank();
        let start = self.pos;
        let s = self.src;
        let b = *s.get(start)?;
        let line = self.line;
        let tok = if b.is_ascii_alphabetic() || b == b'_' {
            let len = s[start..]
                .iter()
                .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                .unwrap_or(s.len() - start);
            self.advance(len);
            Tok::Name
        } else if b.is_ascii_digit()
            || (b == b'.' && s.get(start + 1).is_some_and(u8::is_ascii_digit))
        {
            // A number, exponents' signs included (`1e-5`), so none of it reads as a name.
            let mut i = start + 1;
            while let Some(&c) = s.get(i) {
                let signed = matches!(c, b'+' | b'-') && matches!(s[i - 1], b'e' | b'E');
                if !(c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || signed) {
                    break;
                }
                i += 1;
            }
            self.advance(i - start);
            Tok::Other
        } else if b == b'\'' || b == b'"' {
            let mut i = start + 1;
            while let Some(&c) = s.get(i) {
                i += 1;
                if c == b'\\' {
                    i += 1;
                } else if c == b || c == b'\n' {
                    break;
                }
            }
            self.advance(i.min(s.len()) - start);
            Tok::Other
        } else if let Some(level) = self.long_open(start) {
            self.skip_long(level);
            Tok::Other
        } else if s[start..].starts_with(b"...") {
            self.advance(3);
            Tok::Other
        } else if s[start..].starts_with(b"..") {
            self.advance(2);
            Tok::Other
        } else {
            self.advance(1);
            match b {
                b'.' => Tok::Dot,
                b':' => Tok::Colon,
                _ => Tok::Other,
            }
        };
        Some((tok, start, line))
    }
}

/// Every use in `src` of a global in `names` (a name token not after `.` or `:`), in order.
pub fn uses<'a>(src: &'a [u8], names: &[&[u8]]) -> Vec<Use<'a>> {
    let mut lx = Lexer {
        src,
        pos: 0,
        line: 1,
    };
    let mut out = Vec::new();
    let mut prev = Tok::Other;
    while let Some((tok, start, line)) = lx.next() {
        let text = &src[start..lx.pos];
        let global = tok == Tok::Name && !matches!(prev, Tok::Dot | Tok::Colon);
        prev = tok;
        if !global || !names.contains(&text) {
            continue;
        }
        // What follows: `.` and a name, or anything else (the use is then not a field access).
        let save = (lx.pos, lx.line);
        let field = match lx.next() {
            Some((Tok::Dot, _, _)) => match lx.next() {
                Some((Tok::Name, at, _)) => Some(&src[at..lx.pos]),
                _ => None,
            },
            _ => None,
        };
        let end = if field.is_some() { lx.pos } else { save.0 };
        if field.is_some() {
            prev = Tok::Name;
        } else {
            (lx.pos, lx.line) = save;
        }
        out.push(Use {
            name: text,
            field,
            span: start..end,
            line,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(src: &str) -> Vec<(String, Option<String>, usize)> {
        uses(src.as_bytes(), &[b"redis", b"server"])
            .into_iter()
            .map(|u| {
                (
                    String::from_utf8_lossy(&src.as_bytes()[u.span]).into_owned(),
                    u.field.map(|f| String::from_utf8_lossy(f).into_owned()),
                    u.line,
                )
            })
            .collect()
    }

    #[test]
    fn finds_every_spelling_and_skips_strings_and_comments() {
        let src = "-- redis\n--[==[ redis ]] ]==] local r = redis\nx = 'redis' .. \"re\\\"dis\" .. [[redis]] .. [=[ ]] redis ]=]\nredis --[[c]] . register_function('f', f)\nt.redis = server['register_function']\nlocal a = 1e-5 + x:redis() + y.redis.register_function\nredis.call('GET', 'k')";
        assert_eq!(
            found(src),
            vec![
                ("redis".into(), None, 2),
                (
                    "redis --[[c]] . register_function".into(),
                    Some("register_function".into()),
                    4
                ),
                ("server".into(), None, 5),
                ("redis.call".into(), Some("call".into()), 7),
            ]
        );
    }

    #[test]
    fn field_names_and_concatenation() {
        // `..redis` is a use (concatenation, not a field); `x.redis` is not.
        assert_eq!(
            found("a = 'x'..redis\nb = x.redis"),
            vec![("redis".into(), None, 1)]
        );
        assert_eq!(found("redisx = 1 myredis = 2"), vec![]);
        assert_eq!(
            found("local function f(redis) end"),
            vec![("redis".into(), None, 1)]
        );
        assert_eq!(found("x = 'unterminated"), vec![]);
        assert_eq!(found("x = [==[ open"), vec![]);
    }
}

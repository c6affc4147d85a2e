//! The list of key arguments a call names ([`Keys`], each a [`KeyRef`]), why it could not be made
//! ([`KeyError`]), and the C-string comparison Redis uses on option words: the types both
//! [`super::keys`] (key specs and procs) and [`super::options`] (ported option parsers) build
//! with. A leaf: it imports neither.
use super::KeySpecFlags;

/// One key argument: its index into the request's arguments (the command name is index 0) and
/// how the command uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyRef {
    pub pos: usize,
    pub flags: KeySpecFlags,
}

/// Why the keys of a call cannot be determined. The texts follow Redis's own for the same mistake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("value is not an integer or out of range")]
    NumkeysNotInteger,
    #[error("Number of keys can't be negative")]
    NumkeysNegative,
    #[error("numkeys should be greater than 0")]
    NumkeysZero,
    #[error("Number of keys can't be greater than number of args")]
    NumkeysTooLarge,
    /// The arguments do not fit the command's key layout (what `COMMAND GETKEYS` says then).
    #[error("Invalid arguments specified for command")]
    Invalid,
    /// The command's own parser would reject the options (SORT), in its words.
    #[error("syntax error")]
    Syntax,
    /// An option's number is not one (SORT LIMIT), in the command's words.
    #[error("value is not an integer or out of range")]
    NotInteger,
}

/// Most calls have a handful of keys; keep those off the heap.
const INLINE: usize = 4;

/// The keys of one call, in the order Redis reports them (key-spec order, not argument order).
#[derive(Clone)]
pub struct Keys(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: usize, refs: [KeyRef; INLINE] },
    Heap(Vec<KeyRef>),
}

impl Keys {
    pub(super) fn new() -> Self {
        Keys(Repr::Inline {
            len: 0,
            refs: [KeyRef::default(); INLINE],
        })
    }

    pub(super) fn push(&mut self, key: KeyRef) {
        match &mut self.0 {
            Repr::Inline { len, refs } if *len < INLINE => {
                refs[*len] = key;
                *len += 1;
            }
            Repr::Inline { refs, .. } => {
                let mut heap = Vec::with_capacity(INLINE * 2);
                heap.extend_from_slice(refs);
                heap.push(key);
                self.0 = Repr::Heap(heap);
            }
            Repr::Heap(heap) => heap.push(key),
        }
    }

    pub fn as_slice(&self) -> &[KeyRef] {
        match &self.0 {
            Repr::Inline { len, refs } => &refs[..*len],
            Repr::Heap(heap) => heap,
        }
    }

    /// The argument indices alone.
    pub fn positions(&self) -> impl Iterator<Item = usize> + '_ {
        self.as_slice().iter().map(|k| k.pos)
    }
}

impl std::ops::Deref for Keys {
    type Target = [KeyRef];
    fn deref(&self) -> &[KeyRef] {
        self.as_slice()
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// `strcasecmp(arg, word) == 0`: Redis compares arguments as C strings, so an argument is cut at
/// its first NUL before comparing.
pub(super) fn c_eq_ignore_case(arg: &[u8], word: &str) -> bool {
    let arg = memchr::memchr(0, arg).map_or(arg, |end| &arg[..end]);
    arg.eq_ignore_ascii_case(word.as_bytes())
}

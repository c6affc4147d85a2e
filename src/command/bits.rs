//! Small bitsets for command flags, ACL categories and key-spec flags.
//!
//! Hand-rolled rather than a crate: the table is a `static` built by the generator, so every
//! constructor must be `const`, and the names must round-trip to the upstream's own spelling.
use std::fmt;

macro_rules! bitset {
    (
        $(#[$meta:meta])*
        $name:ident($ty:ty), prefix $prefix:literal {
            $($(#[$cmeta:meta])* $konst:ident = $bit:literal, $text:literal;)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name($ty);

        impl $name {
            pub const EMPTY: Self = Self(0);
            $($(#[$cmeta])* pub const $konst: Self = Self(1 << $bit);)*
            /// Every bit with its upstream spelling (without any prefix), in bit order.
            pub const NAMES: &'static [(Self, &'static str)] = &[$((Self::$konst, $text)),*];
            /// The union of every known bit.
            pub const ALL: Self = Self::of(&[$(Self::$konst),*]);

            /// The union of `parts`; `const` so the generated table can use it.
            pub const fn of(parts: &[Self]) -> Self {
                let mut bits = 0;
                let mut i = 0;
                while i < parts.len() {
                    bits |= parts[i].0;
                    i += 1;
                }
                Self(bits)
            }

            pub const fn bits(self) -> $ty {
                self.0
            }

            /// True if every bit of `other` is set.
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            /// True if any bit of `other` is set.
            pub const fn intersects(self, other: Self) -> bool {
                self.0 & other.0 != 0
            }

            pub const fn union(self, other: Self) -> Self {
                Self(self.0 | other.0)
            }

            pub const fn is_empty(self) -> bool {
                self.0 == 0
            }

            /// The bit for one upstream name, ASCII case-insensitively; a leading
            #[doc = concat!("`", $prefix, "`")]
            /// is accepted and ignored.
            pub fn from_name(name: &str) -> Option<Self> {
                let name = name.strip_prefix($prefix).unwrap_or(name);
                Self::NAMES
                    .iter()
                    .find(|(_, text)| text.eq_ignore_ascii_case(name))
                    .map(|&(bit, _)| bit)
            }

            /// The upstream names of the set bits, in bit order.
            pub fn names(self) -> impl Iterator<Item = &'static str> {
                Self::NAMES
                    .iter()
                    .filter(move |(bit, _)| self.contains(*bit))
                    .map(|&(_, text)| text)
            }
        }

        impl std::ops::BitOr for $name {
            type Output = Self;
            fn bitor(self, rhs: Self) -> Self {
                self.union(rhs)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(", stringify!($name))?;
                for (i, text) in self.names().enumerate() {
                    if i > 0 {
                        f.write_str(" | ")?;
                    }
                    write!(f, "{}{}", $prefix, text)?;
                }
                f.write_str(")")
            }
        }
    };
}

bitset! {
    /// Command flags as `COMMAND INFO` lists them (Redis 7.0's names and order).
    Flags(u32), prefix "" {
        WRITE = 0, "write";
        READONLY = 1, "readonly";
        DENYOOM = 2, "denyoom";
        MODULE = 3, "module";
        ADMIN = 4, "admin";
        PUBSUB = 5, "pubsub";
        NOSCRIPT = 6, "noscript";
        BLOCKING = 7, "blocking";
        LOADING = 8, "loading";
        STALE = 9, "stale";
        SKIP_MONITOR = 10, "skip_monitor";
        SKIP_SLOWLOG = 11, "skip_slowlog";
        ASKING = 12, "asking";
        FAST = 13, "fast";
        NO_AUTH = 14, "no_auth";
        NO_MANDATORY_KEYS = 15, "no_mandatory_keys";
        NO_ASYNC_LOADING = 16, "no_async_loading";
        NO_MULTI = 17, "no_multi";
        MOVABLEKEYS = 18, "movablekeys";
        ALLOW_BUSY = 19, "allow_busy";
    }
}

bitset! {
    /// ACL categories (Redis 7.0's `ACLCommandCategories`, in its bit order). Names are spelled
    /// without the `@`; [`AclCategories::from_name`] takes either form.
    AclCategories(u32), prefix "@" {
        KEYSPACE = 0, "keyspace";
        READ = 1, "read";
        WRITE = 2, "write";
        SET = 3, "set";
        SORTEDSET = 4, "sortedset";
        LIST = 5, "list";
        HASH = 6, "hash";
        STRING = 7, "string";
        BITMAP = 8, "bitmap";
        HYPERLOGLOG = 9, "hyperloglog";
        GEO = 10, "geo";
        STREAM = 11, "stream";
        PUBSUB = 12, "pubsub";
        ADMIN = 13, "admin";
        FAST = 14, "fast";
        SLOW = 15, "slow";
        BLOCKING = 16, "blocking";
        DANGEROUS = 17, "dangerous";
        CONNECTION = 18, "connection";
        TRANSACTION = 19, "transaction";
        SCRIPTING = 20, "scripting";
    }
}

bitset! {
    /// How a command uses a key (Redis 7.0 key-spec flags). Exactly one of RO/RW/OW/RM is set on
    /// a real key; ACCESS/UPDATE/INSERT/DELETE refine it.
    KeySpecFlags(u16), prefix "" {
        /// Read-only: reads the value but does not change it.
        RO = 0, "RO";
        /// Read-write: reads and changes the value in place.
        RW = 1, "RW";
        /// Overwrite: replaces the value without reading it.
        OW = 2, "OW";
        /// Remove: deletes the key.
        RM = 3, "RM";
        /// Returns, copies or uses user data from the value.
        ACCESS = 4, "access";
        /// Updates the value (may also create the key).
        UPDATE = 5, "update";
        /// Adds data to the value without modifying or deleting existing data.
        INSERT = 6, "insert";
        /// Explicitly deletes some content from the value.
        DELETE = 7, "delete";
        /// The argument is not a key, but must be treated like one for cluster routing.
        NOT_KEY = 8, "not_key";
        /// The spec may not find every key; Redis then needs a hand-written key finder.
        INCOMPLETE = 9, "incomplete";
        /// The flags depend on the other arguments (e.g. SET ... GET).
        VARIABLE_FLAGS = 10, "variable_flags";
    }
}

impl KeySpecFlags {
    /// True if the command may change or delete this key (RW, OW or RM).
    pub const fn is_write(self) -> bool {
        self.intersects(Self::of(&[Self::RW, Self::OW, Self::RM]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(AclCategories::from_name("@read"), Some(AclCategories::READ));
        assert_eq!(AclCategories::from_name("READ"), Some(AclCategories::READ));
        assert_eq!(
            AclCategories::from_name("@Connection"),
            Some(AclCategories::CONNECTION)
        );
        assert_eq!(AclCategories::from_name("@all"), None);
        assert_eq!(AclCategories::from_name("@"), None);
        assert_eq!(Flags::from_name("no_multi"), Some(Flags::NO_MULTI));
        assert_eq!(KeySpecFlags::from_name("ow"), Some(KeySpecFlags::OW));
        for (bit, name) in AclCategories::NAMES {
            assert_eq!(AclCategories::from_name(name), Some(*bit));
        }
        assert_eq!(AclCategories::ALL.names().count(), 21);
    }

    #[test]
    fn set_operations() {
        let f = Flags::of(&[Flags::WRITE, Flags::DENYOOM]);
        assert!(f.contains(Flags::WRITE));
        assert!(!f.contains(Flags::WRITE | Flags::FAST));
        assert!(f.intersects(Flags::WRITE | Flags::FAST));
        assert_eq!(format!("{f:?}"), "Flags(write | denyoom)");
        assert_eq!(
            format!("{:?}", AclCategories::READ | AclCategories::FAST),
            "AclCategories(@read | @fast)"
        );
        assert!(Flags::EMPTY.is_empty());
        assert!(KeySpecFlags::OW.is_write() && !KeySpecFlags::RO.is_write());
    }
}

//! Keys several config tables share, declared once ([`KeyGroup`]) and embedded in each table.
//!
//! The edge agent's and the aggregator's `[mqtt]` tables both take the broker security keys
//! (`username`, `password_file`, `password`, `[mqtt.tls]`) beside keys of their own.
//! `#[serde(flatten)]` could embed a shared struct, but it buffers the table first: an unknown key
//! is only found once the whole table is read, so the error points at the table rather than at the
//! key's line, and a value of the wrong type loses its line too. [`embed`] reads the group's keys
//! one by one while the table is read instead: every error keeps the line of its key or value, and
//! a key neither the table nor the group knows is rejected like `deny_unknown_fields` does, the
//! message listing every key of both.
//!
//! The table type derives `Deserialize` with `#[serde(remote = "Self")]` (which makes the derived
//! code an inherent `deserialize` function) and holds the group in a `#[serde(skip)]` field; its
//! own `Deserialize` impl calls [`embed`]:
//!
//! ```
//! use serde::{Deserialize, Deserializer};
//! use serde::de::MapAccess;
//! use sightline_base::config::{KeyGroup, embed};
//!
//! #[derive(Debug, Default)]
//! struct Login {
//!     user: Option<String>,
//! }
//!
//! impl KeyGroup for Login {
//!     const KEYS: &'static [&'static str] = &["user"];
//!     fn read_value<'de, A: MapAccess<'de>>(&mut self, _key: &'static str, map: &mut A) -> Result<(), A::Error> {
//!         self.user = map.next_value()?;
//!         Ok(())
//!     }
//! }
//!
//! #[derive(Debug, Default, Deserialize)]
//! #[serde(remote = "Self", deny_unknown_fields, default)]
//! struct Server {
//!     host: String,
//!     #[serde(skip)]
//!     login: Login,
//! }
//!
//! impl<'de> Deserialize<'de> for Server {
//!     fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
//!         embed(d, |d| Server::deserialize(d), |s| &mut s.login)
//!     }
//! }
//!
//! #[derive(Debug, Deserialize)]
//! struct Config {
//!     server: Server,
//! }
//!
//! let c: Config = toml::from_str("[server]\nhost = \"h\"\nuser = \"u\"\n").unwrap();
//! assert_eq!((c.server.host.as_str(), c.server.login.user.as_deref()), ("h", Some("u")));
//! let e = toml::from_str::<Config>("[server]\nhost = \"h\"\nusr = \"u\"\n").unwrap_err();
//! assert!(e.to_string().contains("line 3"), "{e}");
//! assert!(e.to_string().contains("unknown field `usr`, expected `host` or `user`"), "{e}");
//! ```

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::forward_to_deserialize_any;

/// Keys shared by several config tables, each read on its own as the table is read.
pub trait KeyGroup: Default {
    /// The group's keys, in the order error messages list them.
    const KEYS: &'static [&'static str];

    /// Reads the value of `key` (one of [`Self::KEYS`]) with `map.next_value()`.
    fn read_value<'de, A: MapAccess<'de>>(&mut self, key: &'static str, map: &mut A) -> Result<(), A::Error>;
}

/// Deserialises a table of type `T` holding the key group `G` (where `group_of` says): `own`
/// deserialises the table's own keys (the derived code) from the [`Embedding`] it is given, which
/// hands the group's keys to `G` as they come.
pub fn embed<'de, D, T, G>(
    deserializer: D,
    own: impl FnOnce(Embedding<'_, D, G>) -> Result<T, D::Error>,
    group_of: impl FnOnce(&mut T) -> &mut G,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    G: KeyGroup,
{
    let mut group = G::default();
    let mut table = own(Embedding { inner: deserializer, group: &mut group })?;
    *group_of(&mut table) = group;
    Ok(table)
}

/// A table's deserialiser that reads the keys of the group `G` itself and passes the others on.
pub struct Embedding<'g, D, G> {
    inner: D,
    group: &'g mut G,
}

impl<'de, D: Deserializer<'de>, G: KeyGroup> Deserializer<'de> for Embedding<'_, D, G> {
    type Error = D::Error;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_struct(name, fields, TableVisitor { visitor, group: self.group, own: Some(fields) })
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_map(TableVisitor { visitor, group: self.group, own: None })
    }

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_any(TableVisitor { visitor, group: self.group, own: None })
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct enum identifier ignored_any
    }
}

/// The table's visitor, given a map access that keeps the group's keys for the group.
struct TableVisitor<'g, V, G> {
    visitor: V,
    group: &'g mut G,
    /// The table's own keys, when known (a struct): then unknown keys are rejected here, with the
    /// group's keys in the message.
    own: Option<&'static [&'static str]>,
}

impl<'de, V: Visitor<'de>, G: KeyGroup> Visitor<'de> for TableVisitor<'_, V, G> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let seen = vec![false; G::KEYS.len()];
        self.visitor.visit_map(TableMap { map, group: self.group, own: self.own, seen })
    }

    /// The positional form of a struct (the group keeps its defaults).
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.visitor.visit_seq(seq)
    }
}

struct TableMap<'g, A, G> {
    map: A,
    group: &'g mut G,
    own: Option<&'static [&'static str]>,
    /// Which of the group's keys were read (a second one is a duplicate).
    seen: Vec<bool>,
}

impl<'de, A: MapAccess<'de>, G: KeyGroup> MapAccess<'de> for TableMap<'_, A, G> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        let mut seed = seed;
        loop {
            let key = KeySeed { seed, own: self.own, group: G::KEYS, seen: &mut self.seen };
            match self.map.next_key_seed(key)? {
                None => return Ok(None),
                Some(Key::Own(key)) => return Ok(Some(key)),
                Some(Key::Group(key, unused)) => {
                    // read inside the format's own value access: an error gets the value's line
                    self.group.read_value(key, &mut self.map)?;
                    seed = unused;
                }
            }
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

/// A key of the table: the table's own (deserialised by its seed) or one of the group's (the seed
/// given back, for the next key).
enum Key<V, S> {
    Own(V),
    Group(&'static str, S),
}

/// Reads a key by name inside the format's key access, so that an unknown key's error gets the
/// key's line.
struct KeySeed<'s, S> {
    seed: S,
    own: Option<&'static [&'static str]>,
    group: &'static [&'static str],
    seen: &'s mut [bool],
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<'_, S> {
    type Value = Key<S::Value, S>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let key = String::deserialize(deserializer)?;
        if let Some(i) = self.group.iter().position(|k| *k == key) {
            if std::mem::replace(&mut self.seen[i], true) {
                return Err(de::Error::duplicate_field(self.group[i]));
            }
            return Ok(Key::Group(self.group[i], self.seed));
        }
        if let Some(own) = self.own
            && !own.contains(&key.as_str())
        {
            let expected = OneOf(own.iter().chain(self.group).copied().collect());
            return Err(de::Error::custom(format_args!("unknown field `{key}`, expected {expected}")));
        }
        self.seed.deserialize(IntoDeserializer::<D::Error>::into_deserializer(key)).map(Key::Own)
    }
}

/// The keys a table accepts, as serde lists them in its own "unknown field" errors.
struct OneOf(Vec<&'static str>);

impl fmt::Display for OneOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [] => f.write_str("no field"),
            [one] => write!(f, "`{one}`"),
            [a, b] => write!(f, "`{a}` or `{b}`"),
            names => {
                f.write_str("one of ")?;
                for (i, name) in names.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "`{name}`")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq)]
    struct Login {
        user: Option<String>,
        port: Option<u16>,
    }

    impl KeyGroup for Login {
        const KEYS: &'static [&'static str] = &["user", "port"];
        fn read_value<'de, A: MapAccess<'de>>(&mut self, key: &'static str, map: &mut A) -> Result<(), A::Error> {
            match key {
                "user" => self.user = map.next_value()?,
                _ => self.port = map.next_value()?,
            }
            Ok(())
        }
    }

    #[derive(Debug, Default, PartialEq, Deserialize)]
    #[serde(remote = "Self", deny_unknown_fields, default)]
    struct Server {
        host: String,
        keep_alive_s: u64,
        #[serde(skip)]
        login: Login,
    }

    impl<'de> Deserialize<'de> for Server {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            embed(d, |d| Server::deserialize(d), |s| &mut s.login)
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        #[allow(dead_code)]
        name: String,
        #[serde(default)]
        server: Server,
    }

    fn parse(text: &str) -> Result<Server, String> {
        toml::from_str::<Config>(text).map(|c| c.server).map_err(|e| e.to_string())
    }

    #[test]
    fn the_group_and_the_table_keys_mix_in_any_order() {
        let s = parse("name = \"n\"\n[server]\nport = 1883\nhost = \"h\"\nuser = \"u\"\nkeep_alive_s = 5\n").unwrap();
        let login = Login { user: Some("u".into()), port: Some(1883) };
        assert_eq!(s, Server { host: "h".into(), keep_alive_s: 5, login });
        assert_eq!(parse("name = \"n\"\n[server]\nhost = \"h\"\n").unwrap().login, Login::default());
        assert_eq!(parse("name = \"n\"\n").unwrap(), Server::default());
        assert_eq!(parse("name = \"n\"\nserver = { user = \"u\" }\n").unwrap().login.user.as_deref(), Some("u"));
    }

    #[test]
    fn unknown_keys_are_named_with_their_line_and_every_known_key() {
        let e = parse("name = \"n\"\n[server]\nhost = \"h\"\n\nusr = \"u\"\n").unwrap_err();
        assert!(e.contains("line 5"), "{e}");
        assert!(e.contains("unknown field `usr`, expected one of `host`, `keep_alive_s`, `user`, `port`"), "{e}");
    }

    #[test]
    fn wrong_values_are_named_with_their_line() {
        // in the group
        let e = parse("name = \"n\"\n[server]\nhost = \"h\"\nport = \"x\"\n").unwrap_err();
        assert!(e.contains("line 4") && e.contains("invalid type: string \"x\", expected u16"), "{e}");
        // in the table's own keys, after a key of the group
        let e = parse("name = \"n\"\n[server]\nuser = \"u\"\n\nkeep_alive_s = -1\n").unwrap_err();
        assert!(e.contains("line 5") && e.contains("invalid value"), "{e}");
    }
}

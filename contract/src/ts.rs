//! Contract timestamps: RFC 3339, UTC, exactly millisecond precision (`2026-11-23T08:00:01.200Z`).

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// Formats `t` as the contract requires (converted to UTC, truncated to milliseconds).
pub fn format(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.format(&fmt).expect("every UTC OffsetDateTime formats")
}

/// Parses any RFC 3339 time (readers are lenient about precision and offset).
pub fn parse(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
    OffsetDateTime::parse(s, &Rfc3339).map(|t| t.to_offset(UtcOffset::UTC))
}

/// `#[serde(with = "ts::rfc3339_ms")]` for `OffsetDateTime` fields.
pub mod rfc3339_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        super::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `#[serde(default, with = "ts::rfc3339_ms_opt")]` for `Option<OffsetDateTime>` fields.
pub mod rfc3339_ms_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::format(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OffsetDateTime>, D::Error> {
        match <Option<std::borrow::Cow<'de, str>>>::deserialize(d)? {
            Some(s) => super::parse(&s).map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    #[test]
    fn millisecond_utc() {
        assert_eq!(super::format(datetime!(2026-11-23 09:00:01.2345 +01:00)), "2026-11-23T08:00:01.234Z");
        assert_eq!(super::parse("2026-11-23T08:00:01.2Z").unwrap(), datetime!(2026-11-23 08:00:01.2 UTC));
    }
}

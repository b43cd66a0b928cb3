//! Coarse UTC time: timestamps truncated to the hour and calendar dates.
//!
//! Exact times identify people (they correlate with logins, commits and CI runs),
//! so events only ever carry an [`HourTimestamp`], and local files only a [`UtcDate`].

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const SECONDS_PER_HOUR: u64 = 3_600;
const SECONDS_PER_DAY: u64 = 86_400;

/// A UTC instant truncated to the start of its hour, such as `2026-11-28T14:00:00Z`.
///
/// Architecture Invariant: a value with non-zero minutes or seconds cannot exist.
/// Every constructor truncates, and parsing rejects anything that is not on the hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HourTimestamp {
    /// Seconds since the Unix epoch; always a multiple of 3600.
    unix_seconds: u64,
}

impl HourTimestamp {
    /// The current hour.
    pub fn now() -> HourTimestamp {
        HourTimestamp::from_system_time(SystemTime::now())
    }

    /// The hour that contains `time`; times before 1970 become the epoch.
    pub fn from_system_time(time: SystemTime) -> HourTimestamp {
        let seconds = time
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or(0);
        HourTimestamp::from_unix_seconds(seconds)
    }

    /// The hour that contains the given number of seconds since the Unix epoch.
    pub fn from_unix_seconds(seconds: u64) -> HourTimestamp {
        HourTimestamp {
            unix_seconds: seconds - seconds % SECONDS_PER_HOUR,
        }
    }

    /// Seconds since the Unix epoch, always a whole number of hours.
    pub fn unix_seconds(self) -> u64 {
        self.unix_seconds
    }

    /// The UTC calendar date of this hour.
    pub fn date(self) -> UtcDate {
        UtcDate::from_unix_seconds(self.unix_seconds)
    }

    /// The hour of the day, 0 to 23.
    pub fn hour(self) -> u8 {
        // The remainder is below 24, so the narrowing cannot lose anything.
        ((self.unix_seconds % SECONDS_PER_DAY) / SECONDS_PER_HOUR) as u8
    }
}

impl fmt::Display for HourTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}T{:02}:00:00Z", self.date(), self.hour())
    }
}

/// The error for a string that is not an hour timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid hour timestamp: expected UTC on the hour, like 2026-11-28T14:00:00Z")]
pub struct ParseHourTimestampError;

impl FromStr for HourTimestamp {
    type Err = ParseHourTimestampError;

    fn from_str(text: &str) -> Result<HourTimestamp, ParseHourTimestampError> {
        let (date, rest) = text.split_once('T').ok_or(ParseHourTimestampError)?;
        let date: UtcDate = date.parse().map_err(|_| ParseHourTimestampError)?;
        let hour = rest
            .strip_suffix(":00:00Z")
            .filter(|hour| hour.len() == 2)
            .and_then(parse_digits)
            .filter(|&hour| hour < 24)
            .ok_or(ParseHourTimestampError)?;
        Ok(HourTimestamp {
            unix_seconds: date.unix_seconds() + hour * SECONDS_PER_HOUR,
        })
    }
}

impl HourTimestamp {
    /// The text `YYYY-MM-DDTHH:00:00Z` written into `buffer`, for years up to 9999 (the
    /// formatter handles the rest): serializing every event should not go through `fmt`.
    fn encode(self, buffer: &mut [u8; 20]) -> Option<&str> {
        let date = self.date();
        if date.year > 9_999 {
            return None;
        }
        let two = |value: u8| [b'0' + value / 10, b'0' + value % 10];
        let year = date.year;
        let digit = |value: u16| b'0' + (value % 10) as u8;
        buffer[..4].copy_from_slice(&[
            digit(year / 1_000),
            digit(year / 100),
            digit(year / 10),
            digit(year),
        ]);
        buffer[4] = b'-';
        buffer[5..7].copy_from_slice(&two(date.month));
        buffer[7] = b'-';
        buffer[8..10].copy_from_slice(&two(date.day));
        buffer[10] = b'T';
        buffer[11..13].copy_from_slice(&two(self.hour()));
        buffer[13..].copy_from_slice(b":00:00Z");
        std::str::from_utf8(buffer).ok()
    }
}

impl Serialize for HourTimestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buffer = [0u8; 20];
        match self.encode(&mut buffer) {
            Some(text) => serializer.serialize_str(text),
            None => serializer.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for HourTimestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<HourTimestamp, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for HourTimestamp {
    fn schema_name() -> Cow<'static, str> {
        "HourTimestamp".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "UTC time truncated to the hour.",
            "type": "string",
            "pattern": "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):00:00Z$"
        })
    }
}

/// A UTC calendar date, such as `2026-11-28`, used in local files (never a time of day).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UtcDate {
    year: u16,
    month: u8,
    day: u8,
}

impl UtcDate {
    /// Today's date in UTC.
    pub fn today() -> UtcDate {
        HourTimestamp::now().date()
    }

    /// The date that contains the given number of seconds since the Unix epoch.
    pub fn from_unix_seconds(seconds: u64) -> UtcDate {
        // Howard Hinnant's `civil_from_days`, restricted to dates from 1970 on.
        let days = seconds / SECONDS_PER_DAY;
        let z = days + 719_468;
        let era = z / 146_097;
        let day_of_era = z - era * 146_097;
        let year_of_era =
            (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_index = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * month_index + 2) / 5 + 1;
        let month = if month_index < 10 {
            month_index + 3
        } else {
            month_index - 9
        };
        let year = year_of_era + era * 400 + u64::from(month <= 2);
        UtcDate {
            year: u16::try_from(year).unwrap_or(u16::MAX),
            month: month as u8,
            day: day as u8,
        }
    }

    /// Seconds since the Unix epoch at the start of this date.
    pub fn unix_seconds(self) -> u64 {
        // Howard Hinnant's `days_from_civil`.
        let year = u64::from(self.year) - u64::from(self.month <= 2);
        let era = year / 400;
        let year_of_era = year - era * 400;
        let month = u64::from(self.month);
        let shifted_month = if month > 2 { month - 3 } else { month + 9 };
        let day_of_year = (153 * shifted_month + 2) / 5 + u64::from(self.day) - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        (era * 146_097 + day_of_era - 719_468) * SECONDS_PER_DAY
    }

    /// The year, from 1970.
    pub fn year(self) -> u16 {
        self.year
    }

    /// The month, 1 to 12.
    pub fn month(self) -> u8 {
        self.month
    }

    /// The day of the month, 1 to 31.
    pub fn day(self) -> u8 {
        self.day
    }
}

impl fmt::Display for UtcDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// The error for a string that is not a `YYYY-MM-DD` date.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid date: expected YYYY-MM-DD from 1970 on, like 2026-11-28")]
pub struct ParseDateError;

impl FromStr for UtcDate {
    type Err = ParseDateError;

    fn from_str(text: &str) -> Result<UtcDate, ParseDateError> {
        let bytes = text.as_bytes();
        if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
            return Err(ParseDateError);
        }
        let year = parse_digits(&text[0..4]).ok_or(ParseDateError)?;
        let month = parse_digits(&text[5..7]).ok_or(ParseDateError)?;
        let day = parse_digits(&text[8..10]).ok_or(ParseDateError)?;
        if year < 1970 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month)
        {
            return Err(ParseDateError);
        }
        Ok(UtcDate {
            year: year as u16,
            month: month as u8,
            day: day as u8,
        })
    }
}

impl Serialize for UtcDate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UtcDate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<UtcDate, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for UtcDate {
    fn schema_name() -> Cow<'static, str> {
        "UtcDate".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A UTC calendar date.",
            "type": "string",
            "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
        })
    }
}

/// Parses a string of ASCII digits only (no sign, no spaces).
fn parse_digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_and_parses_known_instants() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (1_764_338_399, "2025-11-28T13:00:00Z"),
            (951_782_400 + 3_599, "2000-02-29T00:00:00Z"),
            (4_102_444_800 + 86_399, "2100-01-01T23:00:00Z"),
        ];
        for (seconds, expected) in cases {
            let hour = HourTimestamp::from_unix_seconds(seconds);
            assert_eq!(hour.to_string(), expected, "seconds {seconds}");
            assert_eq!(expected.parse::<HourTimestamp>(), Ok(hour));
            let json = serde_json::to_string(&hour).unwrap();
            assert_eq!(json, format!("\"{expected}\""));
        }
    }

    #[test]
    fn serializes_years_past_9999_like_display() {
        // A clock set absurdly far ahead: the fast serializer hands over to the formatter.
        let hour = HourTimestamp::from_unix_seconds(300_000_000_000);
        assert_eq!(hour.date().year(), 11_476);
        let json = serde_json::to_string(&hour).unwrap();
        assert_eq!(json, format!("\"{hour}\""));
        assert!(json.starts_with("\"11476-"), "{json}");
    }

    #[test]
    fn rejects_anything_not_on_the_hour() {
        for text in [
            "2026-11-28T14:30:00Z",
            "2026-11-28T14:00:01Z",
            "2026-11-28T24:00:00Z",
            "2026-11-28T14:00:00",
            "2026-11-28T14:00:00+01:00",
            "2026-02-30T14:00:00Z",
            "2026-11-28 14:00:00Z",
            "+026-11-28T14:00:00Z",
            "",
        ] {
            assert_eq!(
                text.parse::<HourTimestamp>(),
                Err(ParseHourTimestampError),
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_invalid_dates() {
        for text in [
            "2026-13-01",
            "2025-02-29",
            "1969-12-31",
            "2026-1-01",
            "20261128",
            "2026-11-2a",
        ] {
            assert_eq!(text.parse::<UtcDate>(), Err(ParseDateError), "{text}");
        }
        assert_eq!(
            "2024-02-29".parse::<UtcDate>().map(|date| date.day()),
            Ok(29)
        );
    }

    proptest! {
        #[test]
        fn every_timestamp_is_on_the_hour_and_round_trips(seconds in 0u64..8_000_000_000) {
            let hour = HourTimestamp::from_unix_seconds(seconds);
            prop_assert_eq!(hour.unix_seconds() % 3_600, 0);
            prop_assert!(hour.unix_seconds() <= seconds && seconds - hour.unix_seconds() < 3_600);
            let text = hour.to_string();
            prop_assert!(text.ends_with(":00:00Z"));
            prop_assert_eq!(text.parse::<HourTimestamp>(), Ok(hour));
            let json = serde_json::to_string(&hour).unwrap();
            prop_assert_eq!(&json, &format!("\"{text}\""));
            prop_assert_eq!(serde_json::from_str::<HourTimestamp>(&json).unwrap(), hour);
        }

        #[test]
        fn dates_round_trip_through_days(seconds in 0u64..8_000_000_000) {
            let date = UtcDate::from_unix_seconds(seconds);
            prop_assert!(date.unix_seconds() <= seconds && seconds - date.unix_seconds() < 86_400);
            prop_assert_eq!(date.to_string().parse::<UtcDate>(), Ok(date));
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(text in "\\PC{0,30}") {
            let _ = text.parse::<HourTimestamp>();
            let _ = text.parse::<UtcDate>();
        }
    }
}

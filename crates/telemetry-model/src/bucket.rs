//! Buckets: the only form in which durations and counts leave the process.
//!
//! An exact duration or count can single out one user or one workload;
//! a coarse bucket says how the SDK is used without saying by whom.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How long something took, in coarse ranges.
///
/// Built from a [`Duration`] with [`DurationBucket::from_duration`]; each range includes its lower bound.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum DurationBucket {
    /// Under one second.
    #[serde(rename = "<1s")]
    UnderOneSecond,
    /// One to ten seconds.
    #[serde(rename = "1-10s")]
    OneToTenSeconds,
    /// Ten to sixty seconds.
    #[serde(rename = "10-60s")]
    TenToSixtySeconds,
    /// One to five minutes.
    #[serde(rename = "1-5min")]
    OneToFiveMinutes,
    /// Five to thirty minutes.
    #[serde(rename = "5-30min")]
    FiveToThirtyMinutes,
    /// Thirty to sixty minutes.
    #[serde(rename = "30-60min")]
    ThirtyToSixtyMinutes,
    /// One to six hours.
    #[serde(rename = "1-6h")]
    OneToSixHours,
    /// Six hours or more.
    #[serde(rename = ">6h")]
    OverSixHours,
}

impl DurationBucket {
    /// Every bucket, shortest first.
    pub const ALL: [DurationBucket; 8] = [
        DurationBucket::UnderOneSecond,
        DurationBucket::OneToTenSeconds,
        DurationBucket::TenToSixtySeconds,
        DurationBucket::OneToFiveMinutes,
        DurationBucket::FiveToThirtyMinutes,
        DurationBucket::ThirtyToSixtyMinutes,
        DurationBucket::OneToSixHours,
        DurationBucket::OverSixHours,
    ];

    /// The bucket that contains `duration`.
    pub fn from_duration(duration: Duration) -> DurationBucket {
        match duration.as_secs() {
            0 => DurationBucket::UnderOneSecond,
            1..10 => DurationBucket::OneToTenSeconds,
            10..60 => DurationBucket::TenToSixtySeconds,
            60..300 => DurationBucket::OneToFiveMinutes,
            300..1_800 => DurationBucket::FiveToThirtyMinutes,
            1_800..3_600 => DurationBucket::ThirtyToSixtyMinutes,
            3_600..21_600 => DurationBucket::OneToSixHours,
            _ => DurationBucket::OverSixHours,
        }
    }

    /// The label used on the wire, such as `1-10s`.
    pub fn as_str(self) -> &'static str {
        match self {
            DurationBucket::UnderOneSecond => "<1s",
            DurationBucket::OneToTenSeconds => "1-10s",
            DurationBucket::TenToSixtySeconds => "10-60s",
            DurationBucket::OneToFiveMinutes => "1-5min",
            DurationBucket::FiveToThirtyMinutes => "5-30min",
            DurationBucket::ThirtyToSixtyMinutes => "30-60min",
            DurationBucket::OneToSixHours => "1-6h",
            DurationBucket::OverSixHours => ">6h",
        }
    }
}

/// A count in coarse ranges, for counts that could otherwise identify a user or a workload
/// (how many flows a program defines, how many tasks ran at once).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum CountBucket {
    /// Zero.
    #[serde(rename = "0")]
    Zero,
    /// Exactly one.
    #[serde(rename = "1")]
    One,
    /// Two to five.
    #[serde(rename = "2-5")]
    TwoToFive,
    /// Six to ten.
    #[serde(rename = "6-10")]
    SixToTen,
    /// Eleven to fifty.
    #[serde(rename = "11-50")]
    ElevenToFifty,
    /// Fifty-one to one hundred.
    #[serde(rename = "51-100")]
    FiftyOneToHundred,
    /// One hundred and one to one thousand.
    #[serde(rename = "101-1000")]
    HundredToThousand,
    /// More than one thousand.
    #[serde(rename = ">1000")]
    OverThousand,
}

impl CountBucket {
    /// Every bucket, smallest first.
    pub const ALL: [CountBucket; 8] = [
        CountBucket::Zero,
        CountBucket::One,
        CountBucket::TwoToFive,
        CountBucket::SixToTen,
        CountBucket::ElevenToFifty,
        CountBucket::FiftyOneToHundred,
        CountBucket::HundredToThousand,
        CountBucket::OverThousand,
    ];

    /// The bucket that contains `count`.
    pub fn from_count(count: u64) -> CountBucket {
        match count {
            0 => CountBucket::Zero,
            1 => CountBucket::One,
            2..=5 => CountBucket::TwoToFive,
            6..=10 => CountBucket::SixToTen,
            11..=50 => CountBucket::ElevenToFifty,
            51..=100 => CountBucket::FiftyOneToHundred,
            101..=1_000 => CountBucket::HundredToThousand,
            _ => CountBucket::OverThousand,
        }
    }

    /// The label used on the wire, such as `2-5`.
    pub fn as_str(self) -> &'static str {
        match self {
            CountBucket::Zero => "0",
            CountBucket::One => "1",
            CountBucket::TwoToFive => "2-5",
            CountBucket::SixToTen => "6-10",
            CountBucket::ElevenToFifty => "11-50",
            CountBucket::FiftyOneToHundred => "51-100",
            CountBucket::HundredToThousand => "101-1000",
            CountBucket::OverThousand => ">1000",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_duration(seconds: f64, expected: &str) {
        let bucket = DurationBucket::from_duration(Duration::from_secs_f64(seconds));
        assert_eq!(bucket.as_str(), expected, "{seconds} s");
        assert_eq!(serde_json::to_value(bucket).unwrap(), expected);
    }

    #[test]
    fn durations_fall_into_their_ranges() {
        let cases = [
            (0.0, "<1s"),
            (0.999, "<1s"),
            (1.0, "1-10s"),
            (9.99, "1-10s"),
            (10.0, "10-60s"),
            (59.9, "10-60s"),
            (60.0, "1-5min"),
            (299.0, "1-5min"),
            (300.0, "5-30min"),
            (1_799.0, "5-30min"),
            (1_800.0, "30-60min"),
            (3_599.0, "30-60min"),
            (3_600.0, "1-6h"),
            (21_599.0, "1-6h"),
            (21_600.0, ">6h"),
            (1.0e9, ">6h"),
        ];
        for (seconds, expected) in cases {
            check_duration(seconds, expected);
        }
    }

    #[test]
    fn counts_fall_into_their_ranges() {
        let cases = [
            (0, "0"),
            (1, "1"),
            (2, "2-5"),
            (5, "2-5"),
            (6, "6-10"),
            (10, "6-10"),
            (11, "11-50"),
            (50, "11-50"),
            (51, "51-100"),
            (100, "51-100"),
            (101, "101-1000"),
            (1_000, "101-1000"),
            (1_001, ">1000"),
            (u64::MAX, ">1000"),
        ];
        for (count, expected) in cases {
            let bucket = CountBucket::from_count(count);
            assert_eq!(bucket.as_str(), expected, "{count}");
            assert_eq!(serde_json::to_value(bucket).unwrap(), expected);
        }
    }

    #[test]
    fn labels_round_trip_through_serde() {
        for bucket in DurationBucket::ALL {
            let json = serde_json::to_string(&bucket).unwrap();
            assert_eq!(
                serde_json::from_str::<DurationBucket>(&json).unwrap(),
                bucket
            );
        }
        for bucket in CountBucket::ALL {
            let json = serde_json::to_string(&bucket).unwrap();
            assert_eq!(serde_json::from_str::<CountBucket>(&json).unwrap(), bucket);
        }
    }
}

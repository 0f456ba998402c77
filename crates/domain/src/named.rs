//! Enums whose variants have stable names: the text stored in the database, shown by the API
//! and used as metric labels. [`named_enum!`] writes the enum with its name table once, so the
//! names live in one place and nothing else spells them.

use crate::error::Result;

/// A closed set of named values: the seam between text (rows, requests) and the domain.
pub trait Named: Copy + Sized + 'static {
    /// Every value, in declaration order.
    const ALL: &'static [Self];

    /// The stable name.
    fn as_str(self) -> &'static str;

    /// The value named `raw`, or the enum's error.
    fn parse(raw: &str) -> Result<Self>;
}

/// Declares an enum of named values: `ALL`, `as_str`, `parse` (with the given error) and
/// `Display`, plus [`Named`].
///
/// ```ignore
/// named_enum! {
///     /// Doc.
///     pub enum Colour; unknown = Error::invalid_field("colour", "is not a colour"); {
///         Red = "red",
///         Blue = "blue",
///     }
/// }
/// ```
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident; unknown = $unknown:expr; {
            $( $(#[$variant_meta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$variant_meta])* $variant, )+
        }

        impl $name {
            pub const ALL: [$name; <[()]>::len(&[$(named_enum!(@unit $variant)),+])] =
                [$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            pub fn parse(raw: &str) -> $crate::error::Result<Self> {
                Self::ALL
                    .into_iter()
                    .find(|value| value.as_str() == raw)
                    .ok_or_else(|| $unknown)
            }
        }

        impl $crate::named::Named for $name {
            const ALL: &'static [Self] = &$name::ALL;

            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }

            fn parse(raw: &str) -> $crate::error::Result<Self> {
                $name::parse(raw)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        // By its stable name, like the database and the API: a value cached by one build of
        // ordo reads back in the next one.
        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = <::std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                $name::parse(&raw).map_err(|_| {
                    ::serde::de::Error::custom(format_args!(
                        "unknown {} {raw:?}",
                        stringify!($name)
                    ))
                })
            }
        }
    };
    (@unit $variant:ident) => {
        ()
    };
}

pub(crate) use named_enum;

#[cfg(test)]
mod tests {
    use super::Named;
    use crate::order::OrderStatus;
    use crate::payment::{CallbackOutcome, PaymentStatus, ReportedStatus};
    use crate::shipment::ShipmentStatus;
    use crate::timeline::TimelineKind;
    use std::collections::HashSet;

    /// Every name parses back to its value, and no two values of an enum share a name.
    fn round_trips<T: Named + PartialEq + std::fmt::Debug>() {
        let mut seen = HashSet::new();
        for &value in T::ALL {
            assert!(seen.insert(value.as_str()), "{value:?}: name used twice");
            assert_eq!(T::parse(value.as_str()).unwrap(), value);
        }
        assert!(T::parse("no such name").is_err());
        assert!(T::parse("").is_err());
    }

    /// Serde uses the stable names too (cached entries are JSON).
    fn serde_round_trips<T>()
    where
        T: Named + PartialEq + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
    {
        for &value in T::ALL {
            let json = serde_json::to_string(&value).unwrap();
            assert_eq!(json, format!("\"{}\"", value.as_str()));
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), value);
        }
        assert!(serde_json::from_str::<T>("\"no such name\"").is_err());
    }

    #[test]
    fn every_name_round_trips() {
        round_trips::<OrderStatus>();
        round_trips::<PaymentStatus>();
        round_trips::<ReportedStatus>();
        round_trips::<CallbackOutcome>();
        round_trips::<ShipmentStatus>();
        round_trips::<TimelineKind>();
        serde_round_trips::<OrderStatus>();
        serde_round_trips::<ShipmentStatus>();
        serde_round_trips::<TimelineKind>();
    }
}

//! The two looks of the same pages. The State's design system is reserved to State entities:
//! the hub run by the State's team shows the Marianne block and fonts (`etat`); a deployment run
//! by a département switches to `neutre`, the same markup without the Marianne block, in the
//! system's fonts.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Theme {
    #[default]
    Etat,
    Neutre,
}

impl Theme {
    pub fn is_state(self) -> bool {
        self == Theme::Etat
    }
}

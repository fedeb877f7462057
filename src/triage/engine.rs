//! Placeholder until the extractor lands: every mail goes to review.

use super::{Decision, Headers, Outcome, Policy, Registry, Triage};

pub fn triage(_raw: &[u8], _registry: &Registry, _policy: &Policy) -> Triage {
    Triage {
        outcome: Outcome::None,
        mpn_id: None,
        decision: Decision::Review,
        reasons: vec!["extractor not built yet".into()],
        candidates: Vec::new(),
        headers: Headers::default(),
        reseller: None,
        reject: None,
    }
}

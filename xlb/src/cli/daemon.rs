//! `xlb apply` and `xlb reload`: what they changed, in words.

/// What `apply`/`reload` changed, in words: "services added 1, reals changed 2".
pub(crate) fn changes_text(changes: &xlb_core::reconcile::Changes) -> String {
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(changes) else { return format!("{changes:?}") };
    let said: Vec<String> = fields
        .iter()
        .filter_map(|(name, value)| match value {
            serde_json::Value::Bool(true) => Some(name.replace('_', " ")),
            serde_json::Value::Number(n) if n.as_u64() != Some(0) => Some(format!("{} {n}", name.replace('_', " "))),
            _ => None,
        })
        .collect();
    if said.is_empty() { "no changes".into() } else { format!("applied: {}", said.join(", ")) }
}

//! The extension's one error type and its one conversion to a PostgreSQL error: every variant
//! maps to a SQLSTATE by an exhaustive match, and errors are classified retryable or permanent
//! by SQLSTATE alone, never by message text.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// Everything that can go wrong in the extension, with the fields needed to report it.
#[derive(Debug, thiserror::Error)]
pub enum PgTrickleError {
    #[error("stream table \"{0}\" does not exist")]
    UnknownStreamTable(String),
    #[error("invalid name syntax: \"{0}\"")]
    InvalidName(String),
    #[error("{0} must run in a READ COMMITTED transaction")]
    NeedsReadCommitted(&'static str),
    /// The relation's schema-qualified name, already quoted (`"public"."t"`).
    #[error("relation {0} already exists")]
    AlreadyExists(String),
    #[error("invalid value for parameter \"{param}\": \"{value}\"")]
    InvalidParameter {
        param: &'static str,
        value: String,
        hint: String,
    },
    #[error("{0}")]
    Engine(#[from] engine::EngineError),
    /// `name` is schema-qualified and already quoted, as in the FULL-fallback NOTICE.
    #[error("stream table {name} cannot be maintained in {mode} mode: {reason}")]
    NotDifferentiable {
        name: String,
        mode: &'static str,
        reason: String,
    },
    #[error("argument \"{argument}\" of {function}() must not be NULL")]
    NullArgument {
        function: &'static str,
        argument: &'static str,
    },
    #[error("the defining query is empty")]
    EmptyQuery,
    /// `found` says what the text holds instead ("3 statements").
    #[error("the defining query must be exactly one SELECT statement, not {found}")]
    NotOneSelect { found: String },
    /// `name` is schema-qualified and already quoted.
    #[error("stream table {name} needs reinitialisation: {reason}")]
    NeedsReinit { name: String, reason: String },
    /// A reinitialisation that cannot rebuild the storage in place.
    #[error("stream table {name} cannot be reinitialised: {reason}")]
    CannotReinit { name: String, reason: String },
    /// A hidden column this release no longer maintains cannot be dropped: objects depend on
    /// it (a view over `SELECT *` of the stream table).
    #[error(
        "stream table {name} needs its hidden columns {columns} dropped (this release of \
         pg_trickle maintains its query with other hidden columns), but {dependents} depend on \
         them"
    )]
    HiddenColumnsInUse {
        name: String,
        columns: String,
        dependents: String,
    },
    /// A new defining query whose result does not fit the storage in place.
    #[error("stream table {name} cannot take the new query in place: {reason}")]
    QueryNotAlterable { name: String, reason: String },
    /// A second change of the defining query while a shadow build runs (`name` quoted).
    #[error("a shadow build of stream table {name} is in progress (its shadow is {shadow})")]
    ShadowBuildInProgress { name: String, shadow: String },
    /// An operation on a shadow's own storage, which pg_trickle maintains until the swap.
    #[error("{name} is the shadow build of stream table {of}")]
    IsShadow { name: String, of: String },
    /// `shadow_build => true` while `pg_trickle.shadow_build_enabled` is off.
    #[error("shadow builds are disabled")]
    ShadowBuildsDisabled,
    /// A stream table whose shadow build cannot start (`reason` says why).
    #[error("stream table {name} cannot be rebuilt in a shadow: {reason}")]
    ShadowNotPossible { name: String, reason: String },
    /// A new defining query whose result lacks what a stream table reading this one reads.
    #[error("the new query of stream table {name} would break stream table {dependent}: {reason}")]
    BreaksDependent {
        name: String,
        dependent: String,
        reason: String,
    },
    /// A relation that cannot be a stream table's source (`what` says what it is).
    #[error("{relation} cannot be a source of a stream table: it is {what}")]
    UnsupportedSource { relation: String, what: String },
    /// `stream_table` is schema-qualified and already quoted.
    #[error("must be owner of stream table {stream_table}")]
    NotOwner { stream_table: String },
    /// `stream_table` is schema-qualified and already quoted.
    #[error("permission denied to manage subscriptions of stream table {stream_table}")]
    NotSubscriber { stream_table: String },
    /// The owner of a stream table may no longer read a source (`relation` as regclass text).
    #[error("permission denied for table {relation}")]
    ReadDenied {
        relation: String,
        role: String,
        stream_table: String,
    },
    /// `stream_table` is schema-qualified and already quoted.
    #[error("stream table {stream_table} has no outbox")]
    NoOutbox { stream_table: String },
    #[error("stream table {stream_table} already has an outbox")]
    OutboxExists { stream_table: String },
    #[error("permission denied to consume the outbox of stream table {stream_table}")]
    NotConsumer { stream_table: String },
    #[error("consumer group \"{group}\" of stream table {stream_table} already exists")]
    ConsumerGroupExists { group: String, stream_table: String },
    #[error("consumer group \"{group}\" of stream table {stream_table} does not exist")]
    UnknownConsumerGroup { group: String, stream_table: String },
    /// Another consumer's lease on a consumer group has not expired.
    #[error(
        "consumer group \"{group}\" of stream table {stream_table} is leased by \"{holder}\" until {until}"
    )]
    LeaseHeld {
        group: String,
        stream_table: String,
        holder: String,
        until: String,
    },
    /// A commit by a consumer that no longer holds the lease of the epoch it polled with.
    #[error(
        "consumer \"{consumer}\" no longer holds the lease of epoch {epoch} on consumer group \"{group}\" of stream table {stream_table}"
    )]
    LeaseLost {
        group: String,
        stream_table: String,
        consumer: String,
        epoch: i64,
    },
    #[error("\"{0}\" is not an inbox")]
    NotAnInbox(String),
    #[error("cannot modify stream table \"{0}\" directly")]
    DirectWrite(String),
    #[error("{message}")]
    Spi {
        sqlstate: String,
        message: String,
        detail: Option<String>,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

/// The value of a SQL function's argument that must not be NULL (22004 otherwise).
pub(crate) fn argument<T>(
    function: &'static str,
    argument: &'static str,
    value: Option<T>,
) -> Result<T, PgTrickleError> {
    value.ok_or(PgTrickleError::NullArgument { function, argument })
}

/// A value of a catalog column declared NOT NULL (`column` as `table.column`): NULL is a broken
/// invariant of pg_trickle's catalog, reported as such — never replaced by a default.
pub fn required<T>(value: Option<T>, column: &str) -> Result<T, PgTrickleError> {
    value.ok_or_else(|| {
        PgTrickleError::Internal(format!(
            "catalog invariant broken: {column} is NULL, and the catalog declares it NOT NULL"
        ))
    })
}

/// Whether retrying the same work later may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    Retryable,
    Permanent,
}

impl PgTrickleError {
    /// The SQLSTATE this error is reported with (five characters).
    pub fn sqlstate(&self) -> String {
        match self {
            PgTrickleError::UnknownStreamTable(_) => "42P01".into(),
            PgTrickleError::InvalidName(_) => "42602".into(),
            PgTrickleError::NeedsReadCommitted(_) => "25000".into(),
            PgTrickleError::AlreadyExists(_) => "42P07".into(),
            PgTrickleError::InvalidParameter { .. } => "22023".into(),
            PgTrickleError::Engine(e) => e.sqlstate().into(),
            PgTrickleError::NotDifferentiable { .. } => "0A000".into(),
            PgTrickleError::NullArgument { .. } => "22004".into(),
            PgTrickleError::EmptyQuery => "42601".into(),
            PgTrickleError::NotOneSelect { .. } => "42601".into(),
            PgTrickleError::DirectWrite(_) | PgTrickleError::NotAnInbox(_) => "42809".into(),
            PgTrickleError::NotOwner { .. }
            | PgTrickleError::NotSubscriber { .. }
            | PgTrickleError::ReadDenied { .. } => "42501".into(),
            PgTrickleError::NeedsReinit { .. } => "55000".into(),
            PgTrickleError::CannotReinit { .. } => "0A000".into(),
            PgTrickleError::HiddenColumnsInUse { .. } => "2BP01".into(),
            PgTrickleError::QueryNotAlterable { .. } => "0A000".into(),
            PgTrickleError::UnsupportedSource { .. } => "0A000".into(),
            PgTrickleError::ShadowBuildInProgress { .. } => "55006".into(),
            PgTrickleError::IsShadow { .. } | PgTrickleError::ShadowBuildsDisabled => {
                "55000".into()
            }
            PgTrickleError::ShadowNotPossible { .. } => "0A000".into(),
            PgTrickleError::BreaksDependent { .. } => "42P16".into(),
            PgTrickleError::NoOutbox { .. } => "55000".into(),
            PgTrickleError::OutboxExists { .. } | PgTrickleError::ConsumerGroupExists { .. } => {
                "42710".into()
            }
            PgTrickleError::NotConsumer { .. } => "42501".into(),
            PgTrickleError::UnknownConsumerGroup { .. } => "42704".into(),
            PgTrickleError::LeaseHeld { .. } | PgTrickleError::LeaseLost { .. } => "55P03".into(),
            PgTrickleError::Spi { sqlstate, .. } => sqlstate.clone(),
            PgTrickleError::Internal(_) => "XX000".into(),
        }
    }

    /// Retryable or permanent, decided by SQLSTATE alone.
    pub fn retry(&self) -> Retry {
        classify_sqlstate(&self.sqlstate())
    }

    fn hint(&self) -> Option<String> {
        match self {
            PgTrickleError::InvalidParameter { hint, .. } => Some(hint.clone()),
            PgTrickleError::NotDifferentiable { .. } => Some(
                "Use refresh_mode => 'FULL', or 'AUTO' to fall back to FULL automatically.".into(),
            ),
            PgTrickleError::DirectWrite(_) => Some(
                "Stream tables are written only by their refreshes; change their sources.".into(),
            ),
            PgTrickleError::NeedsReadCommitted(_) => Some(
                "Its capture triggers must be in place before the snapshot that populates the \
                 stream table is taken; a REPEATABLE READ transaction took its snapshot earlier."
                    .into(),
            ),
            PgTrickleError::NeedsReinit { .. } => Some(
                "refresh_stream_table() rebuilds it (FULL) once its defining query works again."
                    .into(),
            ),
            PgTrickleError::QueryNotAlterable { .. } => Some(
                "A shadow build (shadow_build => true) takes any new shape; otherwise drop the \
                 stream table and create it with the new query."
                    .into(),
            ),
            PgTrickleError::CannotReinit { .. } => {
                Some("Drop the stream table and create it again.".into())
            }
            PgTrickleError::HiddenColumnsInUse { .. } => Some(
                "Drop or redefine those objects without the __pgt_ columns (name the columns \
                 instead of SELECT *), then refresh the stream table."
                    .into(),
            ),
            PgTrickleError::UnsupportedSource { .. } => {
                Some("Stream tables read permanent user tables and other stream tables.".into())
            }
            PgTrickleError::NullArgument { .. } => {
                Some("Leave an argument out to get its default.".into())
            }
            PgTrickleError::NotOwner { .. } => Some(
                "Only the owner of its storage table (or a member of that role) may alter, \
                 refresh or drop a stream table."
                    .into(),
            ),
            PgTrickleError::NotSubscriber { .. } => Some(
                "The stream table's owner and the roles it granted SELECT on it may subscribe; \
                 a subscription is removed by its owner or by the role that subscribed."
                    .into(),
            ),
            PgTrickleError::ReadDenied { .. } => Some(
                "A stream table is refreshed with its owner's privileges: grant the owner SELECT \
                 on the table again, or change the owner with ALTER TABLE … OWNER TO."
                    .into(),
            ),
            PgTrickleError::ShadowBuildInProgress { .. } => Some(
                "pgtrickle.view_evolution_status() follows it; dropping its shadow table cancels \
                 it."
                .into(),
            ),
            PgTrickleError::IsShadow { .. } => Some(
                "pg_trickle maintains a shadow until it is swapped in or rolled back; \
                 pgtrickle.view_evolution_status() follows it."
                    .into(),
            ),
            PgTrickleError::ShadowBuildsDisabled => Some(
                "A superuser enables them with pg_trickle.shadow_build_enabled = on; without \
                 shadow_build the query is changed in one transaction."
                    .into(),
            ),
            PgTrickleError::BreaksDependent { .. } => {
                Some("Keep the columns the dependent stream table reads, or drop it first.".into())
            }
            PgTrickleError::ShadowNotPossible { .. } => Some(
                "Nothing was changed; docs/SHADOW_BUILDS.md says what a shadow build needs.".into(),
            ),
            PgTrickleError::NoOutbox { .. } => {
                Some("The stream table's owner enables it with pgtrickle.enable_outbox().".into())
            }
            PgTrickleError::NotConsumer { .. } => Some(
                "The stream table's owner and the roles it granted SELECT on it may consume its \
                 outbox."
                    .into(),
            ),
            PgTrickleError::UnknownConsumerGroup { .. } => {
                Some("pgtrickle.create_consumer_group() creates one.".into())
            }
            PgTrickleError::LeaseHeld { .. } => Some(
                "One consumer of a group reads at a time; another takes over when the lease \
                 expires."
                    .into(),
            ),
            PgTrickleError::LeaseLost { .. } => Some(
                "Another consumer took the lease over after it expired: poll again, and \
                 deliver what it returns."
                    .into(),
            ),
            PgTrickleError::NotAnInbox(_) => {
                Some("pgtrickle.create_inbox() creates an inbox and its dead-letter table.".into())
            }
            PgTrickleError::UnknownStreamTable(_)
            | PgTrickleError::OutboxExists { .. }
            | PgTrickleError::ConsumerGroupExists { .. }
            | PgTrickleError::EmptyQuery
            | PgTrickleError::NotOneSelect { .. }
            | PgTrickleError::InvalidName(_)
            | PgTrickleError::AlreadyExists(_)
            | PgTrickleError::Engine(_)
            | PgTrickleError::Spi { .. }
            | PgTrickleError::Internal(_) => None,
        }
    }

    fn detail(&self) -> Option<String> {
        match self {
            PgTrickleError::Spi { detail, .. } => detail.clone(),
            PgTrickleError::ReadDenied {
                role, stream_table, ..
            } => Some(format!(
                "Stream table {stream_table} is refreshed as its owner, role \"{role}\", which \
                 may not read the columns it depends on."
            )),
            _ => None,
        }
    }
}

/// The one conversion to a PostgreSQL error: `#[pg_extern]` functions return
/// `Result<_, ErrorReport>` and `?` turns a `PgTrickleError` into its SQLSTATE, detail and hint.
impl From<PgTrickleError> for ErrorReport {
    fn from(e: PgTrickleError) -> Self {
        let code = sqlstate_to_code(&e.sqlstate());
        let mut report = ErrorReport::new(code, e.to_string(), "pg_trickle");
        if let Some(d) = e.detail() {
            report = report.set_detail(d);
        }
        if let Some(h) = e.hint() {
            report = report.set_hint(h);
        }
        report
    }
}

/// Retryable SQLSTATE classes: 40 (transaction rollback: serialization failure, deadlock),
/// 08 (connection), 53 (insufficient resources), and the codes 55P03 (lock not available) and
/// 57014 (query canceled). Everything else is permanent.
pub fn classify_sqlstate(sqlstate: &str) -> Retry {
    let class = sqlstate.get(0..2).unwrap_or("");
    if matches!(class, "40" | "08" | "53") || matches!(sqlstate, "55P03" | "57014") {
        Retry::Retryable
    } else {
        Retry::Permanent
    }
}

/// Decodes PostgreSQL's packed SQLSTATE (six bits per character) into its five characters.
pub fn code_to_sqlstate(code: PgSqlErrorCode) -> String {
    let packed = code as i64;
    (0..5)
        .map(|i| char::from(((packed >> (6 * i)) & 0x3F) as u8 + b'0'))
        .collect()
}

/// Encodes five SQLSTATE characters into PostgreSQL's packed form; unknown input maps to
/// XX000 (internal error).
pub fn sqlstate_to_code(sqlstate: &str) -> PgSqlErrorCode {
    let bytes = sqlstate.as_bytes();
    if bytes.len() != 5 {
        return PgSqlErrorCode::ERRCODE_INTERNAL_ERROR;
    }
    let packed = bytes.iter().enumerate().fold(0i32, |acc, (i, b)| {
        acc | ((i32::from(b.wrapping_sub(b'0')) & 0x3F) << (6 * i))
    });
    PgSqlErrorCode::from(packed)
}

/// Converts pgrx's SPI API errors (misuse of the API, datum conversion) into ours.
impl From<pgrx::spi::Error> for PgTrickleError {
    fn from(e: pgrx::spi::Error) -> Self {
        PgTrickleError::Internal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_round_trips_through_packed_code() {
        for s in [
            "42P01", "0A000", "40001", "55P03", "57014", "22023", "XX000", "42601",
        ] {
            assert_eq!(code_to_sqlstate(sqlstate_to_code(s)), s);
        }
    }

    #[test]
    fn retryable_classes_are_decided_by_code() {
        for s in ["40001", "40P01", "08006", "53200", "55P03", "57014"] {
            assert_eq!(classify_sqlstate(s), Retry::Retryable, "{s}");
        }
        for s in ["42P01", "22012", "23505", "0A000", "55000", "XX000"] {
            assert_eq!(classify_sqlstate(s), Retry::Permanent, "{s}");
        }
    }
}

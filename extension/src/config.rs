//! The `pg_trickle.*` GUCs: defined once in `_PG_init`, read through the accessors here.
//! Every GUC is documented in docs/CONFIGURATION.md (the catalogue there lists exactly these).

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// `pg_trickle.enabled`: master switch. Off: change capture records only a "skipped" marker
/// (so dependents are fully refreshed later).
pub static ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
/// `pg_trickle.cdc_paused`: capture triggers skip row capture and leave a marker that makes
/// every dependent's next refresh FULL (plan A07).
pub static CDC_PAUSED: GucSetting<bool> = GucSetting::<bool>::new(false);
/// `pg_trickle.force_full_refresh`: every refresh runs FULL while set (plan A08).
pub static FORCE_FULL_REFRESH: GucSetting<bool> = GucSetting::<bool>::new(false);

/// Registers the GUCs. Called from `_PG_init` in every process that loads the library.
pub(crate) fn define() {
    GucRegistry::define_bool_guc(
        c"pg_trickle.enabled",
        c"Enables pg_trickle change capture and refreshes.",
        c"When off, capture triggers record only that a write was skipped, so dependents \
          refresh FULL next time.",
        &ENABLED,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pg_trickle.cdc_paused",
        c"Pauses row capture into change buffers.",
        c"While on, capture triggers return at once after leaving a marker, and every stream \
          table reading a source written meanwhile runs its next refresh FULL.",
        &CDC_PAUSED,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pg_trickle.force_full_refresh",
        c"Makes every refresh FULL, whatever each stream table's mode.",
        c"For diagnosis: overrides the refresh mode of every stream table while set; each \
          such refresh says so in a NOTICE and in its history row.",
        &FORCE_FULL_REFRESH,
        GucContext::Suset,
        GucFlags::default(),
    );
}

pub(crate) fn force_full_refresh() -> bool {
    FORCE_FULL_REFRESH.get()
}

/*-------------------------------------------------------------------------
 *
 * config.c
 *		concord's settings: the concord.* GUC variables and their definitions.
 *
 * The variables are declared in concord.h, which every folder may include;
 * the definitions are made once, by _PG_init (concord.c).  Every setting is
 * PGC_SIGHUP (a reload reaches running workers) but the pace of a diff,
 * which a session may set for the diffs it starts, as for VACUUM.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "utils/guc.h"

#include "concord.h"
#include "conflict/conflict.h"
#include "shmem/shmem.h"

int			concord_conflict_resolver = CONCORD_RESOLVER_LAST_UPDATE_WINS;
int			concord_max_clock_skew = 1000;	/* ms */
int			concord_history_retention = 0;	/* minutes; 0: forever */
int			concord_handler_timeout = 1000;	/* ms; 0: none */
int			concord_tombstone_gc_delay = 300;	/* s */
int			concord_tombstone_retention = 0;	/* s; 0: forever */
int			concord_receive_timeout = 60000;	/* ms; 0: none */
int			concord_causal_wait = 60000;	/* ms; 0: never wait */
int			concord_apply_workers = 1;
int			concord_check_interval = 0; /* s; 0: no scheduled diffs */
int			concord_diff_cost_delay = 0;	/* ms; 0: no pause */
int			concord_diff_cost_limit = 10000;	/* rows per step */
int			concord_check_cost_delay = 1000;	/* ms; -1: diff_cost_delay */
int			concord_check_cost_limit = -1;	/* rows; -1: diff_cost_limit */

void
concord_define_gucs(void)
{
	DefineCustomEnumVariable("concord.conflict_resolver",
							 "Default conflict resolver for tables without their own.",
							 "One of last_update_wins, first_update_wins, replica_priority, "
							 "keep_local, apply_remote, skip, error.",
							 &concord_conflict_resolver,
							 CONCORD_RESOLVER_LAST_UPDATE_WINS,
							 concord_resolver_guc_options,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("concord.max_clock_skew",
							"How far ahead of the local clock a remote commit timestamp may be.",
							"Apply waits until the local clock passes a remote commit timestamp, "
							"so that later local writes carry later timestamps; beyond this much, "
							"the subscription also reports the skew in last_error while it waits.",
							&concord_max_clock_skew,
							1000, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("concord.conflict_history_retention",
							"How long rows are kept in concord.conflict_history (0: forever).",
							NULL,
							&concord_history_retention,
							0, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MIN,
							NULL, NULL, NULL);

	DefineCustomIntVariable("concord.handler_timeout",
							"How long a conflict handler may run (0: no limit).",
							"A handler that runs longer is cancelled and its change skipped, "
							"recorded in concord.conflict_history.",
							&concord_handler_timeout,
							1000, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("concord.tombstone_gc_delay",
							"How long a tombstone is kept at least, even once every peer confirmed it.",
							"Covers a peer's transaction that was open since before it applied the deletion.",
							&concord_tombstone_gc_delay,
							300, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("concord.tombstone_retention",
							"How long a tombstone waits for every peer to confirm it (0: forever).",
							"Older tombstones are removed anyway; a peer that had not confirmed them "
							"is then refused until its tables are resynchronized.",
							&concord_tombstone_retention,
							0, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("concord.receive_timeout",
							"How long a stream from a provider may stay silent before it is taken as dead.",
							"After half of it, apply asks the provider for a sign of life; after all of it, "
							"apply drops the connection, shows the subscription as down, and reconnects "
							"with backoff.  Keep it above the providers' wal_sender_timeout.  0: no limit.",
							&concord_receive_timeout,
							60000, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("concord.apply_workers_per_subscription",
							"How many workers apply each subscription's transactions.",
							"Above 1, a leader reads the stream and hands whole transactions "
							"to that many workers; transactions that touch a common key never "
							"run together, and every transaction commits in the provider's "
							"order.  Read when a subscription's apply starts.",
							&concord_apply_workers,
							1, 1, CONCORD_MAX_APPLY_WORKERS,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("concord.causal_wait",
							"How long apply holds a remote UPDATE that overtook the change it follows.",
							"A remote UPDATE that finds no row, whose writer had applied changes of "
							"another node that this node has not received yet, waits for them: its "
							"subscription retries it (and shows down, saying what it waits for) until "
							"they are applied or this much time has passed; then it is applied as the "
							"newer version.  0: never wait.",
							&concord_causal_wait,
							60000, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("concord.check_interval",
							"How often the manager starts a diff of a replicated table (0: never).",
							"Each time, the table of the local replication sets whose last diff "
							"started the longest ago is compared with every node this node subscribes "
							"to (concord.table_diff), unless a diff of this database is running; the "
							"results go to concord.diff_run and concord.diff_row.",
							&concord_check_interval,
							0, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("concord.diff_cost_delay",
							"How long a diff pauses between two steps of its read of the table.",
							"A diff (concord.table_diff) reads the table on every node in steps of "
							"concord.diff_cost_limit rows, then waits this long before the next step, "
							"so that its read takes a bounded share of every node's CPU and disk, as "
							"autovacuum's cost delay does.  0: no pause (steps of 100,000 rows).  "
							"The value of the session that starts the diff applies.",
							&concord_diff_cost_delay,
							0, 0, 10000,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("concord.diff_cost_limit",
							"How many rows each node reads in a step of a diff, between two pauses.",
							NULL,
							&concord_diff_cost_limit,
							10000, 1, 1000000,
							PGC_USERSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("concord.check_cost_delay",
							"concord.diff_cost_delay for the scheduled diffs (concord.check_interval).",
							"-1: concord.diff_cost_delay.",
							&concord_check_cost_delay,
							1000, -1, 10000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("concord.check_cost_limit",
							"concord.diff_cost_limit for the scheduled diffs (concord.check_interval).",
							"-1: concord.diff_cost_limit.",
							&concord_check_cost_limit,
							-1, -1, 1000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("concord");
}

/*-------------------------------------------------------------------------
 *
 * truncate.c
 *		Replays a remote TRUNCATE, table owner by table owner.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "catalog/catalog.h"
#include "commands/tablecmds.h"
#include "utils/rel.h"

#include "apply/apply.h"

/*
 * A remote TRUNCATE empties exactly the tables the provider shipped.  Its
 * CASCADE was expanded on the provider, whose message lists every table
 * the cascade reached there; cascading again here would follow this
 * node's own foreign keys into tables the provider never touched (local
 * ones among them).  So it is replayed with RESTRICT, as PostgreSQL's own
 * apply does: a local table that still references one of them stops the
 * subscription with the foreign key's error, until the operator decides.
 */
void
concord_apply_truncate(List *arels, bool restart_seqs)
{
	List	   *rels = NIL;
	List	   *done = NIL;
	ListCell   *lc;

	foreach(lc, arels)
	{
		ApplyRel   *arel = lfirst(lc);

		if (!list_member_oid(done, arel->localid))
		{
			rels = lappend(rels, table_open(arel->localid, AccessExclusiveLock));
			done = lappend_oid(done, arel->localid);
		}
	}

	/*
	 * TRUNCATE triggers run as the table's owner.  PostgreSQL 15 cannot
	 * switch users between the tables of one TRUNCATE, so the tables are
	 * truncated per owner, together where they have one owner; tables of
	 * different owners that reference one another by a foreign key then
	 * stop the subscription with the foreign key's error.
	 */
	while (rels != NIL)
	{
		Oid			owner = ((Relation) linitial(rels))->rd_rel->relowner;
		List	   *group = NIL;
		List	   *relids = NIL;
		List	   *relids_logged = NIL;
		List	   *rest = NIL;
		ConcordAsOwner saved;

		foreach(lc, rels)
		{
			Relation	rel = lfirst(lc);

			if (rel->rd_rel->relowner != owner)
			{
				rest = lappend(rest, rel);
				continue;
			}
			group = lappend(group, rel);
			relids = lappend_oid(relids, RelationGetRelid(rel));
			/* Logged, so that rings and stars forward it. */
			if (RelationIsLogicallyLogged(rel))
				relids_logged = lappend_oid(relids_logged, RelationGetRelid(rel));
		}
		foreach(lc, group)
		{
			/* Checks each table's privilege; the last switch stays. */
			if (foreach_current_index(lc) > 0)
				concord_restore_user(&saved);
			concord_become_table_owner(lfirst(lc), ACL_TRUNCATE,
									   concord_remote_txn->sub_name, &saved);
		}
		ExecuteTruncateGuts(group, relids, relids_logged, DROP_RESTRICT,
							restart_seqs);
		concord_restore_user(&saved);
		foreach(lc, group)
			table_close(lfirst(lc), NoLock);
		rels = rest;
	}
	CommandCounterIncrement();
}

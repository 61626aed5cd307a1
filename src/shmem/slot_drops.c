/*-------------------------------------------------------------------------
 *
 * slot_drops.c
 *		Slots on providers that the manager is to drop.
 *
 * create_subscription makes its slot on the provider in the middle of its
 * transaction; if that transaction aborts, the slot must go.  An abort
 * must not wait on the network (it cannot be interrupted, and a host name
 * may take any time to resolve: review #22), so the aborting backend only
 * writes the slot here and wakes the manager of its database, which drops
 * it as the subscription's DSN allows, retrying with backoff while the
 * provider cannot be reached, up to CONCORD_SLOT_DROP_TRIES times (about
 * ten minutes), then gives up with a WARNING that names the slot.  A
 * create_subscription that needs the slot's name again takes the drop
 * back and does it itself.
 *
 * Kept in shared memory, and saved to a file by the launcher every few
 * seconds and at its exit (an abort may not write it), loaded at startup:
 * a restart keeps them, a crash within seconds of the abort may forget
 * one (the slot stays, and create_subscription of that name says so).  A
 * loaded entry may be stale: taken back by a create_subscription that
 * committed since the last save, or copied with the data directory.  So
 * the manager drops nothing on the strength of an entry alone: not a slot
 * one of the database's subscriptions names, nor in a copy of its node,
 * nor when the node's marker is no longer the one the entry was made
 * under (manager.c).  The launcher forgets the entries of databases that
 * no longer exist.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "catalog/identity.h"
#include "shmem/shmem.h"

/*
 * Hands the drop of slot_name on the provider at dsn to the manager of
 * this database; false when it cannot be handed (no room, DSN too long).
 * Called while a transaction aborts: no ERROR, no I/O.
 */
bool
concord_slot_drop_defer(const char *dsn, bool password_required,
						const char *slot_name, const char *marker)
{
	ConcordSlotDrop *free_entry = NULL;

	if (strlen(dsn) >= CONCORD_SLOT_DROP_DSN_LEN)
		return false;
	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	for (int i = 0; i < CONCORD_SLOT_DROPS && free_entry == NULL; i++)
		if (!OidIsValid(ConcordShmem->slot_drops[i].dboid))
			free_entry = &ConcordShmem->slot_drops[i];
	if (free_entry)
	{
		memset(free_entry, 0, sizeof(ConcordSlotDrop));
		free_entry->dboid = MyDatabaseId;
		free_entry->password_required = password_required;
		strlcpy(free_entry->slot_name, slot_name, NAMEDATALEN);
		strlcpy(free_entry->marker, marker, NAMEDATALEN);
		strlcpy(free_entry->dsn, dsn, CONCORD_SLOT_DROP_DSN_LEN);
	}
	LWLockRelease(ConcordShmem->lock);
	if (free_entry)
		concord_request_manager(MyDatabaseId);
	return free_entry != NULL;
}

static ConcordSlotDrop *
find_drop(Oid dboid, const char *slot_name)
{
	for (int i = 0; i < CONCORD_SLOT_DROPS; i++)
	{
		ConcordSlotDrop *d = &ConcordShmem->slot_drops[i];

		if (d->dboid == dboid && strcmp(d->slot_name, slot_name) == 0)
			return d;
	}
	return NULL;
}

/* Takes back the waiting drop of slot_name, into *out. */
ConcordSlotDropCancel
concord_slot_drop_cancel(Oid dboid, const char *slot_name, ConcordSlotDrop *out)
{
	ConcordSlotDropCancel result = CONCORD_SLOT_DROP_NONE;
	ConcordSlotDrop *d;

	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	d = find_drop(dboid, slot_name);
	if (d && d->busy)
		result = CONCORD_SLOT_DROP_BUSY;
	else if (d)
	{
		*out = *d;
		d->dboid = InvalidOid;
		result = CONCORD_SLOT_DROP_TAKEN;
	}
	LWLockRelease(ConcordShmem->lock);
	return result;
}

/* The manager: claims a drop of its database that is due, into *out. */
bool
concord_slot_drop_claim(Oid dboid, ConcordSlotDrop *out)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		found = false;

	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	for (int i = 0; i < CONCORD_SLOT_DROPS && !found; i++)
	{
		ConcordSlotDrop *d = &ConcordShmem->slot_drops[i];

		if (d->dboid == dboid && !d->busy && d->retry_after <= now)
		{
			d->busy = true;
			*out = *d;
			found = true;
		}
	}
	LWLockRelease(ConcordShmem->lock);
	return found;
}

/*
 * The manager: done with a claimed drop.  One that failed waits a while,
 * or, after CONCORD_SLOT_DROP_TRIES failures, is given up: true then.
 */
bool
concord_slot_drop_finish(Oid dboid, const char *slot_name, bool dropped)
{
	ConcordSlotDrop *d;
	bool		given_up = false;

	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	d = find_drop(dboid, slot_name);
	if (d && dropped)
		d->dboid = InvalidOid;
	else if (d && ++d->failures >= CONCORD_SLOT_DROP_TRIES)
	{
		d->dboid = InvalidOid;
		given_up = true;
	}
	else if (d)
	{
		d->busy = false;
		d->retry_after = concord_backoff_until(d->failures);
	}
	LWLockRelease(ConcordShmem->lock);
	return given_up;
}

/*
 * Takes out one waiting drop of the database, into *out, to give it up (its
 * database has no concord any more); false when none is left.
 */
bool
concord_slot_drop_forget_one(Oid dboid, ConcordSlotDrop *out)
{
	bool		found = false;

	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	for (int i = 0; i < CONCORD_SLOT_DROPS && !found; i++)
	{
		ConcordSlotDrop *d = &ConcordShmem->slot_drops[i];

		if (d->dboid == dboid)
		{
			*out = *d;
			d->dboid = InvalidOid;
			found = true;
		}
	}
	LWLockRelease(ConcordShmem->lock);
	return found;
}

/* Whether drops of the database wait (its manager stays for them). */
bool
concord_slot_drops_waiting(Oid dboid)
{
	bool		waiting = false;

	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	for (int i = 0; i < CONCORD_SLOT_DROPS && !waiting; i++)
		waiting = ConcordShmem->slot_drops[i].dboid == dboid;
	LWLockRelease(ConcordShmem->lock);
	return waiting;
}

/* A manager starts: the drops a dead one had claimed wait again. */
void
concord_slot_drops_unclaim(Oid dboid)
{
	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	for (int i = 0; i < CONCORD_SLOT_DROPS; i++)
		if (ConcordShmem->slot_drops[i].dboid == dboid)
			ConcordShmem->slot_drops[i].busy = false;
	LWLockRelease(ConcordShmem->lock);
}

#define SLOT_DROPS_FILE		"concord_slot_drops.state"
#define SLOT_DROPS_FILE_TMP	"concord_slot_drops.state.tmp"
/* "CSD" and the layout's version: a file of another layout is not read. */
#define SLOT_DROPS_MAGIC	0x43534401

/*
 * The launcher: writes the waiting drops of every database to the state
 * file, if they changed since it last did.  The file holds DSNs, as the
 * catalogs do, passwords included: it is the server owner's only, as
 * every file of the data directory.
 */
void
concord_slot_drops_save(void)
{
	static ConcordSlotDrop saved[CONCORD_SLOT_DROPS];
	static int	nsaved = -1;
	ConcordSlotDrop copy[CONCORD_SLOT_DROPS];
	int			used = 0;

	memset(copy, 0, sizeof(copy));
	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	for (int i = 0; i < CONCORD_SLOT_DROPS; i++)
		if (OidIsValid(ConcordShmem->slot_drops[i].dboid))
			copy[used++] = ConcordShmem->slot_drops[i];
	LWLockRelease(ConcordShmem->lock);
	for (int i = 0; i < used; i++)
	{
		copy[i].busy = false;
		copy[i].retry_after = 0;
		copy[i].loaded = false;
	}
	if (used == nsaved && memcmp(copy, saved, sizeof(ConcordSlotDrop) * used) == 0)
		return;
	if (concord_state_file_write(SLOT_DROPS_FILE, SLOT_DROPS_FILE_TMP,
								 SLOT_DROPS_MAGIC, copy,
								 sizeof(ConcordSlotDrop), used))
	{
		memcpy(saved, copy, sizeof(ConcordSlotDrop) * used);
		nsaved = used;
	}
}

/* At startup (postmaster): the drops saved last, due at once. */
void
concord_slot_drops_load(void)
{
	int			n = concord_state_file_read(SLOT_DROPS_FILE, SLOT_DROPS_MAGIC,
											ConcordShmem->slot_drops,
											sizeof(ConcordSlotDrop),
											CONCORD_SLOT_DROPS);

	for (int i = 0; i < n; i++)
	{
		ConcordSlotDrop *d = &ConcordShmem->slot_drops[i];

		d->slot_name[NAMEDATALEN - 1] = '\0';
		d->marker[NAMEDATALEN - 1] = '\0';
		d->dsn[CONCORD_SLOT_DROP_DSN_LEN - 1] = '\0';
		d->busy = false;
		d->retry_after = 0;
		d->loaded = true;
	}
}

/*
 * The launcher, outside a transaction: forgets the drops of databases
 * that no longer exist (DROP DATABASE, or a state file of another
 * cluster's), whose manager never comes, each with a WARNING.
 */
void
concord_slot_drops_forget_dropped(void)
{
	Oid			dbs[CONCORD_SLOT_DROPS];
	bool		gone[CONCORD_SLOT_DROPS];
	int			n = 0;

	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	for (int i = 0; i < CONCORD_SLOT_DROPS; i++)
		if (OidIsValid(ConcordShmem->slot_drops[i].dboid))
			dbs[n++] = ConcordShmem->slot_drops[i].dboid;
	LWLockRelease(ConcordShmem->lock);
	if (n == 0)
		return;
	StartTransactionCommand();
	for (int i = 0; i < n; i++)
		gone[i] = !SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum(dbs[i]));
	CommitTransactionCommand();
	for (int i = 0; i < n; i++)
	{
		char		slot_name[NAMEDATALEN] = "";

		if (!gone[i])
			continue;
		LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
		for (int j = 0; j < CONCORD_SLOT_DROPS; j++)
		{
			ConcordSlotDrop *d = &ConcordShmem->slot_drops[j];

			/* busy too: a manager that died claiming it never comes back */
			if (d->dboid == dbs[i])
			{
				strlcpy(slot_name, d->slot_name, NAMEDATALEN);
				d->dboid = InvalidOid;
				break;
			}
		}
		LWLockRelease(ConcordShmem->lock);
		if (slot_name[0] != '\0')
			ereport(WARNING,
					(errmsg("replication slot \"%s\" of an aborted subscription is left on the provider: its database no longer exists",
							slot_name),
					 errhint("Drop it on the provider with SELECT pg_drop_replication_slot('%s').",
							 slot_name)));
	}
}

/*
 * The launcher, once at startup: forgets the drops loaded from the state
 * file that a node left whose marker slot this server lacks.  pg_basebackup
 * copies the file but no slot: a copy of the node must not drop the
 * original's slots, which may be in use by then (a subscription of the
 * same name made again there).  Checked at startup only: the original's
 * own marker goes at DROP EXTENSION before its manager drops what waits.
 */
void
concord_slot_drops_forget_foreign(void)
{
	for (int i = 0; i < CONCORD_SLOT_DROPS; i++)
	{
		ConcordSlotDrop d;
		bool		foreign;

		LWLockAcquire(ConcordShmem->lock, LW_SHARED);
		d = ConcordShmem->slot_drops[i];
		LWLockRelease(ConcordShmem->lock);
		if (!OidIsValid(d.dboid) || d.marker[0] == '\0')
			continue;
		foreign = !concord_identity_marker_present(d.marker);
		if (!foreign)
			continue;
		LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
		if (ConcordShmem->slot_drops[i].dboid == d.dboid &&
			strcmp(ConcordShmem->slot_drops[i].slot_name, d.slot_name) == 0)
			ConcordShmem->slot_drops[i].dboid = InvalidOid;
		LWLockRelease(ConcordShmem->lock);
		ereport(WARNING,
				(errmsg("concord does not drop replication slot \"%s\" on the provider: the node that left it to drop is not this server (its marker slot \"%s\" is not here)",
						d.slot_name, d.marker),
				 errdetail("The slot was made by a create_subscription that rolled back on the server this data directory was copied from, or before the node's identity changed."),
				 errhint("If no node uses it, drop it on the provider with SELECT pg_drop_replication_slot('%s').",
						 d.slot_name)));
	}
}

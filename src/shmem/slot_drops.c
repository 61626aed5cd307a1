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
 * back and does it itself.  Kept in shared memory only: a restart forgets
 * them (the slot stays, and create_subscription of that name says so).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/lwlock.h"
#include "utils/timestamp.h"

#include "shmem/shmem.h"

/*
 * Hands the drop of slot_name on the provider at dsn to the manager of
 * this database; false when it cannot be handed (no room, DSN too long).
 * Called while a transaction aborts: no ERROR, no I/O.
 */
bool
concord_slot_drop_defer(const char *dsn, bool password_required,
						const char *slot_name)
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

/*-------------------------------------------------------------------------
 *
 * own_commits.h
 *		The transactions a subscription's apply worker committed, and their
 *		origins.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_OWN_COMMITS_H
#define CONCORD_OWN_COMMITS_H

#include "shmem/shmem.h"

extern void concord_own_commits_attach(ConcordCommitRuns *runs);
extern void concord_own_commit_note(FullTransactionId fxid, RepOriginId origin);
extern bool concord_own_commit_origin(TransactionId xid, RepOriginId *origin);

#endif							/* CONCORD_OWN_COMMITS_H */

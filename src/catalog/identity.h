/*-------------------------------------------------------------------------
 *
 * identity.h
 *		Which database of which server is this node (identity.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_IDENTITY_H
#define CONCORD_IDENTITY_H

/* What a copy is told to do, in every refusal's HINT. */
#define COPY_HINT \
	"To make this database a new node, drop its subscriptions (on a copy, " \
	"concord.drop_subscription() leaves the providers' slots alone), then " \
	"concord.drop_node() and concord.create_node() with a new name. If it " \
	"is the node itself (after pg_upgrade, or a failover to a standby), run " \
	"SELECT concord.reclaim_node_identity()."

extern void concord_identity_record(void);
extern void concord_identity_reclaim(void);
extern void concord_identity_forget(void);
extern bool concord_identity_check(char **why);
extern bool concord_identity_check_marker(char **why);
extern bool concord_identity_recorded(void);
extern char *concord_identity_marker(void);
extern bool concord_identity_marker_present(const char *name);
extern void concord_identity_sweep_at_commit(void);
extern bool concord_identity_sweep(void);
extern void concord_identity_sweep_dropped(void);

#endif							/* CONCORD_IDENTITY_H */

/*-------------------------------------------------------------------------
 *
 * remote.h
 *		libpq connections to peers, waiting on the latch.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_REMOTE_H
#define CONCORD_REMOTE_H

#include "datatype/timestamp.h"
#include "libpq-fe.h"
#include "nodes/pg_list.h"

extern void concord_check_dsn(const char *dsn, const char *what);
extern bool concord_check_dsn_for_user(const char *dsn);
extern PGconn *concord_remote_connect(const char *dsn, bool replication,
									  const char *appname,
									  bool password_required);
extern PGconn *concord_remote_connect_until(const char *dsn, bool replication,
											const char *appname,
											bool password_required,
											TimestampTz deadline);
extern PGresult *concord_remote_exec(PGconn *conn, const char *sql,
									 int nparams, const char *const *params);
extern PGresult *concord_remote_exec_within(PGconn *conn, const char *sql,
											int nparams,
											const char *const *params);
extern bool concord_remote_send_until(PGconn *conn, const char *sql,
									  int nparams, const char *const *params,
									  TimestampTz deadline);
extern PGresult *concord_remote_collect_until(PGconn *conn,
											  TimestampTz deadline);
extern PGresult *concord_remote_exec_until(PGconn *conn, const char *sql,
										   int nparams,
										   const char *const *params,
										   TimestampTz deadline);
extern PGresult *concord_remote_query(PGconn *conn, const char *sql,
									  int nparams, const char *const *params,
									  ExecStatusType expected);
extern int	concord_remote_get_copy(PGconn *conn, char **buf, bool wait);
extern void concord_remote_wait(PGconn *conn, int events, long timeout_ms);
extern void concord_remote_wait_readable(PGconn *conn, long timeout_ms);
extern void concord_remote_flush(PGconn *conn);
extern char *concord_remote_error(PGconn *conn);
extern char *concord_remote_copy_error(PGconn *conn);
extern void concord_remote_finish(PGconn *conn);
extern char *concord_redact_dsn(const char *text);
extern void concord_redact_current_statement(void);
extern char *concord_remote_text_array(List *strings);
extern bool concord_remote_has_function(PGconn *conn, const char *signature);

/* slots.c */
extern void concord_slot_create(const char *dsn, bool password_required,
								const char *slot_name);
extern bool concord_slot_drop(const char *dsn, bool password_required,
							  const char *slot_name, const char *appname,
							  bool wait);

#endif							/* CONCORD_REMOTE_H */

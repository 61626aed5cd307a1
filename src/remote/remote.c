/*-------------------------------------------------------------------------
 *
 * remote.c
 *		libpq connections from a backend or worker to a peer.
 *
 * Every wait goes through WaitLatchOrSocket, so a worker or a user's
 * session stays responsive to SIGTERM, query cancel and postmaster death
 * while a peer is slow.  Nothing here logs a DSN: libpq's messages do not
 * contain the password, and concord_redact_dsn() hides it from statement
 * texts that do.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "mb/pg_wchar.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "concord.h"
#include "remote/remote.h"

/*
 * Waits until the connection's socket is ready for events, or timeout
 * (-1: none).  Interrupts end the wait.  A query may wait as long as the
 * provider works on it (CREATE_REPLICATION_SLOT waits for the provider's
 * oldest transactions, a filtered COPY may scan long between rows), so
 * only the replication stream has a silence limit (apply.c,
 * concord.receive_timeout); a peer that vanished under a query is found by
 * the TCP keepalives and tcp_user_timeout every connection sets.
 */
void
concord_remote_wait(PGconn *conn, int events, long timeout_ms)
{
	int			rc;

	rc = WaitLatchOrSocket(MyLatch,
						   WL_LATCH_SET | WL_EXIT_ON_PM_DEATH | events |
						   (timeout_ms >= 0 ? WL_TIMEOUT : 0),
						   PQsocket(conn), timeout_ms, PG_WAIT_EXTENSION);
	if (rc & WL_LATCH_SET)
		ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/*
 * Waits until the connection's socket is readable, or timeout, with a
 * wait event set made once for the connection: a worker streaming from a
 * peer waits between every batch of messages, and a set made per wait
 * costs an epoll instance and its system calls each time.
 */
static WaitEventSet *ReadableSet = NULL;
static PGconn *ReadableSetConn = NULL;
static pgsocket ReadableSetSocket = PGINVALID_SOCKET;

static void
forget_readable_set(void)
{
	if (ReadableSet)
		FreeWaitEventSet(ReadableSet);
	ReadableSet = NULL;
	ReadableSetConn = NULL;
	ReadableSetSocket = PGINVALID_SOCKET;
}

void
concord_remote_wait_readable(PGconn *conn, long timeout_ms)
{
	WaitEvent	event;

	if (ReadableSet != NULL &&
		(ReadableSetConn != conn || ReadableSetSocket != PQsocket(conn)))
		forget_readable_set();
	if (ReadableSet == NULL)
	{
		ReadableSet = CreateWaitEventSet(TopMemoryContext, 3);
		AddWaitEventToSet(ReadableSet, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
		AddWaitEventToSet(ReadableSet, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
		AddWaitEventToSet(ReadableSet, WL_SOCKET_READABLE, PQsocket(conn), NULL, NULL);
		ReadableSetConn = conn;
		ReadableSetSocket = PQsocket(conn);
	}
	if (WaitEventSetWait(ReadableSet, timeout_ms, &event, 1, PG_WAIT_EXTENSION) == 1 &&
		(event.events & WL_LATCH_SET))
		ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/* libpq's last error, trimmed, in the current memory context. */
char *
concord_remote_error(PGconn *conn)
{
	char	   *msg = pstrdup(PQerrorMessage(conn));
	int			len = strlen(msg);

	while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == '\r'))
		msg[--len] = '\0';
	return msg;
}

/*
 * Checks that dsn is a libpq connection string, without ever echoing it:
 * libpq's parse errors quote the text around the mistake, which may be a
 * password.  what names the object the dsn is for, in the message.
 */
void
concord_check_dsn(const char *dsn, const char *what)
{
	char	   *err = NULL;
	PQconninfoOption *opts = PQconninfoParse(dsn, &err);

	if (err)
		PQfreemem(err);
	if (opts)
		PQconninfoFree(opts);
	if (opts == NULL || dsn[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid dsn for %s", what),
				 errdetail("The dsn is not a valid libpq connection string; it is not shown because it may contain a password."),
				 errhint("Use a connection string such as 'host=db1 port=5432 dbname=app' or a postgresql:// URI."),
				 errhidestmt(true)));
}

/*
 * The libpq keywords a role that is not a superuser may give: where and
 * whom to connect to, with its own password, and how.  Every other one
 * names a file of this server (passfile, sslcert, sslkey, sslrootcert,
 * sslcrl, service, ...), reads its secrets (sslpassword, krbsrvname,
 * gsslib) or is newer than this list: refused.
 */
static const char *const UserKeywords[] = {
	"host", "hostaddr", "port", "dbname", "user", "password",
	"connect_timeout", "client_encoding", "options", "application_name",
	"fallback_application_name", "keepalives", "keepalives_idle",
	"keepalives_interval", "keepalives_count", "tcp_user_timeout",
	"sslmode", "sslcompression", "sslsni", "ssl_min_protocol_version",
	"ssl_max_protocol_version", "channel_binding", "target_session_attrs",
	"requirepeer", NULL
};

static bool
user_keyword(const char *keyword)
{
	for (int i = 0; UserKeywords[i]; i++)
		if (strcmp(keyword, UserKeywords[i]) == 0)
			return true;
	return false;
}

/*
 * A role that is not a superuser may make this server connect to a peer
 * (create_subscription) only with a password of its own: without one, the
 * server's own credentials would serve it (a .pgpass entry of the server's
 * OS user, its client certificates, peer authentication), and keywords
 * naming files would make the server read its own (review #18).  As dblink
 * and postgres_fdw require.  Checked before connecting; that the password
 * was used is checked after each connection with the DSN, by whoever makes
 * it (concord_remote_connect), for as long as the subscription exists: a
 * host list or a DNS name could lead a later connection elsewhere.
 * Returns whether connections with this DSN must use its password (the
 * caller is not a superuser).
 */
bool
concord_check_dsn_for_user(const char *dsn)
{
	PQconninfoOption *opts;
	bool		password = false;

	if (superuser())
		return false;
	opts = PQconninfoParse(dsn, NULL);
	if (opts == NULL)
		return true;			/* concord_check_dsn() reports it */
	for (PQconninfoOption *o = opts; o->keyword; o++)
	{
		if (o->val == NULL || o->val[0] == '\0')
			continue;
		if (strcmp(o->keyword, "password") == 0)
			password = true;
		if (!user_keyword(o->keyword))
		{
			char	   *keyword = pstrdup(o->keyword);

			PQconninfoFree(opts);
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("only a superuser may give %s in a provider's connection string",
							keyword),
					 errdetail("It could make this server use its own files or credentials."),
					 errhidestmt(true)));
		}
	}
	PQconninfoFree(opts);
	if (!password)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("a password is required in the provider's connection string"),
				 errdetail("Roles that are not superusers must connect with a password of their own, not with this server's credentials."),
				 errhint("Give password=... in the connection string, or have a superuser create the subscription."),
				 errhidestmt(true)));
	return true;
}

#define OPTIONS_REPLICATION \
	"-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3 " \
	"-c timezone=UTC -c bytea_output=hex"
#define OPTIONS_ORDINARY \
	OPTIONS_REPLICATION " -c search_path=pg_catalog -c standard_conforming_strings=on"

/*
 * Connects to a peer.  With password_required (a DSN given by a role that
 * is not a superuser: concord_check_dsn_for_user), the peer must have
 * asked for the DSN's password, or the connection is refused: otherwise
 * this server's own credentials would have let it in.
 */
PGconn *
concord_remote_connect(const char *dsn, bool replication, const char *appname,
					   bool password_required)
{
	return concord_remote_connect_until(dsn, replication, appname, password_required, 0);
}

/* concord_remote_connect(), connected before deadline (0: none of its own). */
PGconn *
concord_remote_connect_until(const char *dsn, bool replication,
							 const char *appname, bool password_required,
							 TimestampTz deadline)
{
	/*
	 * Values travel as text: the provider's output settings are fixed, so
	 * that dates, intervals, floats, timestamps with time zone and bytea
	 * read back the same here whatever the provider's configuration, and
	 * every provider writes a key alike (apply/key_lock.c hashes the text of
	 * a key column whose equality has no hash function).
	 * An ordinary connection also resolves names in pg_catalog only (every
	 * statement concord sends qualifies its own), so that no object a
	 * provider's user made is called by mistake (review #2), and reads
	 * string literals the standard way.
	 */
	/*
	 * The keywords before dbname are defaults the DSN may override: TCP
	 * keepalives, so that a peer that vanished is noticed by the kernel
	 * too, and a bound on unacknowledged sends and on connecting.  Those
	 * after it are concord's and override the DSN's.
	 */
	char		user_timeout[16];
	char		connect_timeout[16];
	const char *keys[] = {"keepalives", "keepalives_idle", "keepalives_interval",
		"keepalives_count", "tcp_user_timeout", "connect_timeout",
		"dbname", "fallback_application_name",
		"client_encoding", "options", "replication", NULL};
	const char *vals[] = {"1", "20", "5", "3", user_timeout, connect_timeout,
		dsn, appname, GetDatabaseEncodingName(),
		OPTIONS_REPLICATION,
	"database", NULL};
	PGconn	   *conn;
	PostgresPollingStatusType status = PGRES_POLLING_WRITING;
	TimestampTz receive_deadline;
	int			limit_ms;

	snprintf(user_timeout, sizeof(user_timeout), "%d", Max(concord_receive_timeout, 0));
	snprintf(connect_timeout, sizeof(connect_timeout), "%d",
			 concord_receive_timeout > 0 ? Max(concord_receive_timeout / 1000, 2) : 0);
	if (!replication)
	{
		keys[10] = NULL;
		vals[9] = OPTIONS_ORDINARY;
	}
	concord_check_dsn(dsn, "the provider");
	conn = PQconnectStartParams(keys, vals, true);
	if (conn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory while connecting to a peer")));
	/*
	 * libpq applies connect_timeout only to blocking connections: this one
	 * is bounded here, by concord.receive_timeout (60 s without one).
	 */
	receive_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												   concord_receive_timeout > 0 ?
												   concord_receive_timeout : 60000);
	if (deadline == 0 || deadline > receive_deadline)
	{
		deadline = receive_deadline;
		limit_ms = concord_receive_timeout > 0 ? concord_receive_timeout : 60000;
	}
	else
		limit_ms = (int) Min(TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline),
							 PG_INT32_MAX);
	while (PQstatus(conn) != CONNECTION_BAD &&
		   status != PGRES_POLLING_OK && status != PGRES_POLLING_FAILED)
	{
		long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);

		if (left <= 0)
		{
			PQfinish(conn);
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("could not connect to the provider: no answer within %d ms",
							limit_ms),
					 errhidestmt(true)));
		}
		concord_remote_wait(conn,
							status == PGRES_POLLING_READING ?
							WL_SOCKET_READABLE : WL_SOCKET_WRITEABLE,
							left);
		status = PQconnectPoll(conn);
	}
	if (PQstatus(conn) != CONNECTION_OK)
	{
		char	   *msg = concord_remote_error(conn);

		PQfinish(conn);
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not connect to the provider: %s", msg),
				 errhidestmt(true)));
	}
	if (password_required && !PQconnectionUsedPassword(conn))
	{
		PQfinish(conn);
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("the provider did not ask for the password"),
				 errdetail("Roles that are not superusers must connect with a password of their own, not with this server's credentials."),
				 errhint("Have the provider authenticate this connection by password, or have a superuser create the subscription."),
				 errhidestmt(true)));
	}
	return conn;
}

/*
 * When the statement concord_remote_exec_within() runs must have been
 * answered; 0: no bound.
 */
static TimestampTz ExecDeadline = 0;
static int	ExecLimitMs = 0;

/* Milliseconds left until ExecDeadline (-1: no bound); ERROR if none. */
static long
exec_time_left(void)
{
	long		left;

	if (ExecDeadline == 0)
		return -1;
	left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), ExecDeadline);
	if (left <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("the provider did not answer within %d ms", ExecLimitMs),
				 errhidestmt(true)));
	return left;
}

static void
wait_until_not_busy(PGconn *conn)
{
	while (PQisBusy(conn))
	{
		concord_remote_wait(conn, WL_SOCKET_READABLE, exec_time_left());
		if (!PQconsumeInput(conn))
			break;
	}
}

/* Flushes what libpq has buffered for the peer. */
void
concord_remote_flush(PGconn *conn)
{
	int			r;

	while ((r = PQflush(conn)) == 1)
		concord_remote_wait(conn, WL_SOCKET_WRITEABLE | WL_SOCKET_READABLE,
							exec_time_left());
	if (r < 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not send data to the provider: %s",
						concord_remote_error(conn))));
}

/* Sends one statement without waiting for its result; false if lost. */
static bool
remote_send(PGconn *conn, const char *sql, int nparams,
			const char *const *params)
{
	/* Replication connections speak only the simple query protocol. */
	if (params == NULL ? !PQsendQuery(conn, sql) :
		!PQsendQueryParams(conn, sql, nparams, NULL, params, NULL, NULL, 0))
		return false;
	concord_remote_flush(conn);
	return true;
}

/* Sets the deadline of the statement being sent or read. */
static void
set_deadline(TimestampTz deadline)
{
	ExecDeadline = deadline;
	ExecLimitMs = (int) Min(TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
															deadline), PG_INT32_MAX);
}

/*
 * remote_send(), sent before deadline or an ERROR; its result is then
 * read with concord_remote_collect_until().
 */
bool
concord_remote_send_until(PGconn *conn, const char *sql, int nparams,
						  const char *const *params, TimestampTz deadline)
{
	volatile bool sent = false;

	set_deadline(deadline);
	PG_TRY();
	{
		sent = remote_send(conn, sql, nparams, params);
	}
	PG_FINALLY();
	{
		ExecDeadline = 0;
	}
	PG_END_TRY();
	return sent;
}

/*
 * The last result of the statement sent (NULL on a lost connection).
 * Stops at COPY results, which the caller then reads.
 */
static PGresult *
remote_collect(PGconn *conn)
{
	PGresult   *last = NULL;
	PGresult   *res;

	for (;;)
	{
		wait_until_not_busy(conn);
		res = PQgetResult(conn);
		if (res == NULL)
			break;
		if (last)
			PQclear(last);
		last = res;
		if (PQresultStatus(res) == PGRES_COPY_OUT ||
			PQresultStatus(res) == PGRES_COPY_IN ||
			PQresultStatus(res) == PGRES_COPY_BOTH ||
			PQstatus(conn) == CONNECTION_BAD)
			break;
	}
	return last;
}

/*
 * Runs one statement and returns its last result (NULL on a lost
 * connection).  Stops at COPY results, which the caller then reads.
 */
PGresult *
concord_remote_exec(PGconn *conn, const char *sql, int nparams,
					const char *const *params)
{
	if (!remote_send(conn, sql, nparams, params))
		return NULL;
	return remote_collect(conn);
}

/* The result of the statement concord_remote_send_until() sent, before deadline. */
PGresult *
concord_remote_collect_until(PGconn *conn, TimestampTz deadline)
{
	PGresult   *volatile res = NULL;

	set_deadline(deadline);
	PG_TRY();
	{
		res = remote_collect(conn);
	}
	PG_FINALLY();
	{
		ExecDeadline = 0;
	}
	PG_END_TRY();
	return res;
}

/*
 * concord_remote_exec(), answered within concord.receive_timeout (60 s
 * without one) or an ERROR: for a worker that must not wait for ever on a
 * peer whose network froze (its stream's silence is not watched meanwhile).
 */
PGresult *
concord_remote_exec_within(PGconn *conn, const char *sql, int nparams,
						   const char *const *params)
{
	return concord_remote_exec_until(conn, sql, nparams, params,
									 TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
																 concord_receive_timeout > 0 ?
																 concord_receive_timeout : 60000));
}

/* concord_remote_exec(), answered before deadline or an ERROR. */
PGresult *
concord_remote_exec_until(PGconn *conn, const char *sql, int nparams,
						  const char *const *params, TimestampTz deadline)
{
	PGresult   *volatile res = NULL;

	set_deadline(deadline);
	PG_TRY();
	{
		res = concord_remote_exec(conn, sql, nparams, params);
	}
	PG_FINALLY();
	{
		ExecDeadline = 0;
	}
	PG_END_TRY();
	return res;
}

/* Runs a statement that must return the expected status, or errors. */
PGresult *
concord_remote_query(PGconn *conn, const char *sql, int nparams,
					 const char *const *params, ExecStatusType expected)
{
	PGresult   *res = concord_remote_exec(conn, sql, nparams, params);

	if (res == NULL || PQresultStatus(res) != expected)
	{
		char	   *msg = res && PQresultErrorMessage(res)[0] ?
			pstrdup(PQresultErrorMessage(res)) : concord_remote_error(conn);
		char	   *sqlstate = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
		int			code = sqlstate && strlen(sqlstate) == 5 ?
			MAKE_SQLSTATE(sqlstate[0], sqlstate[1], sqlstate[2], sqlstate[3], sqlstate[4]) :
			ERRCODE_CONNECTION_FAILURE;

		if (res)
			PQclear(res);
		ereport(ERROR,
				(errcode(code),
				 errmsg("the provider refused a request: %s", pchomp(msg)),
				 errhidestmt(true)));
	}
	return res;
}

/*
 * Reads the next row of a COPY from the peer into *buf (to be freed with
 * PQfreemem).  Returns its length; 0 when !wait and nothing is there yet;
 * -1 at the end of the COPY.
 */
int
concord_remote_get_copy(PGconn *conn, char **buf, bool wait)
{
	for (;;)
	{
		int			len = PQgetCopyData(conn, buf, true);

		if (len > 0 || len == -1)
			return len;
		if (len == -2)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("lost the provider while receiving data: %s",
							concord_remote_error(conn))));
		if (!wait)
			return 0;
		concord_remote_wait(conn, WL_SOCKET_READABLE, -1);
		if (!PQconsumeInput(conn))
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("lost the provider while receiving data: %s",
							concord_remote_error(conn))));
	}
}

/*
 * After a COPY from the peer ended, the peer's reason when it ended it
 * with an error (a walsender's ERROR: the provider refused to stream),
 * trimmed, in the current memory context; NULL when it ended cleanly.
 */
char *
concord_remote_copy_error(PGconn *conn)
{
	PGresult   *res;
	char	   *msg = NULL;

	wait_until_not_busy(conn);
	res = PQgetResult(conn);
	if (res != NULL && PQresultStatus(res) == PGRES_FATAL_ERROR)
	{
		const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
		const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);

		if (primary != NULL)
			msg = hint != NULL ? psprintf("%s (%s)", primary, hint) : pstrdup(primary);
		else					/* an error of libpq's own */
			msg = pchomp(PQresultErrorMessage(res));
	}
	PQclear(res);
	return msg;
}

void
concord_remote_finish(PGconn *conn)
{
	if (conn && conn == ReadableSetConn)
		forget_readable_set();
	if (conn)
		PQfinish(conn);
}

/*
 * Returns text with the value of every password= keyword and the password
 * of every URI (scheme://user:password@host) replaced by ***.
 */
char *
concord_redact_dsn(const char *text)
{
	StringInfoData buf;
	const char *p = text;

	initStringInfo(&buf);
	while (*p)
	{
		if (pg_strncasecmp(p, "password", 8) == 0)
		{
			const char *q = p + 8;

			while (*q == ' ')
				q++;
			if (*q == '=')
			{
				q++;
				while (*q == ' ')
					q++;
				appendStringInfoString(&buf, "password=***");
				if (*q == '\'' || (*q == '\\' && q[1] == '\''))
				{
					/* quoted value, possibly with doubled or escaped quotes */
					q += (*q == '\\') ? 2 : 1;
					while (*q && *q != '\'')
						q += (*q == '\\' && q[1]) ? 2 : 1;
					if (*q)
						q++;
				}
				else
					while (*q && *q != ' ' && *q != '\'' && *q != '&')
						q++;
				p = q;
				continue;
			}
		}
		if (p[0] == ':' && p[1] == '/' && p[2] == '/')
		{
			const char *at = p + 3;
			const char *colon = NULL;

			while (*at && *at != '@' && *at != '/' && *at != ' ' && *at != '\'')
			{
				if (*at == ':' && colon == NULL)
					colon = at;
				at++;
			}
			if (*at == '@' && colon != NULL)
			{
				appendBinaryStringInfo(&buf, p, colon - p + 1);
				appendStringInfoString(&buf, "***");
				p = at;
				continue;
			}
		}
		appendStringInfoChar(&buf, *p++);
	}
	return buf.data;
}

/*
 * A function that takes a DSN hides any password in it from the server
 * log (error STATEMENT lines) and pg_stat_activity for the rest of the
 * statement.
 */
void
concord_redact_current_statement(void)
{
	char	   *redacted;

	if (debug_query_string == NULL)
		return;
	/* The query text itself lives in MessageContext, until the next query. */
	redacted = MemoryContextStrdup(MessageContext ? MessageContext : TopMemoryContext,
								   concord_redact_dsn(debug_query_string));
	if (strcmp(redacted, debug_query_string) == 0)
		return;
	debug_query_string = redacted;
	pgstat_report_activity(STATE_RUNNING, redacted);
}

/*
 * A text[] literal of the strings, for a parameter of a remote query:
 * each element quoted, its quotes and backslashes escaped.
 */
char *
concord_remote_text_array(List *strings)
{
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	foreach(lc, strings)
	{
		if (foreach_current_index(lc) > 0)
			appendStringInfoChar(&buf, ',');
		appendStringInfoChar(&buf, '"');
		for (const char *c = lfirst(lc); *c; c++)
		{
			if (*c == '"' || *c == '\\')
				appendStringInfoChar(&buf, '\\');
			appendStringInfoChar(&buf, *c);
		}
		appendStringInfoChar(&buf, '"');
	}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/* Whether the remote database has the function (its SQL objects' version). */
bool
concord_remote_has_function(PGconn *conn, const char *signature)
{
	const char *params[1] = {signature};
	PGresult   *res = concord_remote_query(conn,
										   "SELECT pg_catalog.to_regprocedure($1) IS NOT NULL",
										   1, params, PGRES_TUPLES_OK);
	bool		has = strcmp(PQgetvalue(res, 0, 0), "t") == 0;

	PQclear(res);
	return has;
}

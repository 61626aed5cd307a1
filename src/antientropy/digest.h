/*-------------------------------------------------------------------------
 *
 * digest.h
 *		Anti-entropy's read of a table on one node (digest.c): per row its
 *		bucket of key hash, digest and version, summed per bucket or
 *		listed, by ranges of blocks.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_DIGEST_H
#define CONCORD_DIGEST_H

#include "datatype/timestamp.h"
#include "storage/block.h"
#include "utils/array.h"
#include "utils/jsonb.h"

/* One row, as concord.table_digest_rows() lists it. */
typedef struct ConcordDigestRow
{
	int			bucket;
	char	   *key;			/* jsonb text */
	char		digest[33];		/* MD5 of the row's jsonb text, in hex */
	bool		known;			/* commit_time is known */
	TimestampTz commit_time;
	const char *origin_node;	/* NULL: not known */
	bool		settled;
} ConcordDigestRow;

typedef void (*ConcordDigestEmit) (const ConcordDigestRow *row, void *arg);

typedef struct ConcordDigestScan ConcordDigestScan;

extern ConcordDigestScan *concord_digest_begin(MemoryContext parent, Oid relid,
											   Jsonb *fences, int buckets,
											   ArrayType *only_buckets,
											   bool list_rows, bool whole);
extern BlockNumber concord_digest_step(ConcordDigestScan *scan, int64 max_rows,
									   ConcordDigestEmit emit, void *arg);
extern void concord_digest_buckets(ConcordDigestScan *scan, int bucket,
								   int64 *row_count, int64 *in_flight,
								   char *digest);
extern int	concord_digest_nbuckets(ConcordDigestScan *scan);
extern void concord_digest_end(ConcordDigestScan *scan);

/* md5.c */
extern void concord_md5(const void *data, size_t len, uint8 *out);

#endif							/* CONCORD_DIGEST_H */

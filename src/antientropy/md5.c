/*-------------------------------------------------------------------------
 *
 * md5.c
 *		MD5 (RFC 1321) of a buffer, for the digests of anti-entropy.
 *
 * A diff hashes every row of a table twice (its key and its values).
 * PostgreSQL's pg_md5_binary() goes through OpenSSL when the server is
 * built with it, which allocates a context and looks the algorithm up for
 * every call: about a sixth of a digest's time.  This is the algorithm
 * itself, written from the RFC, with no state beyond a call.  Its results
 * are the same as md5()'s: the regression test 100_table_digest checks
 * them against md5() on texts of every length up to several blocks.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "antientropy/digest.h"

/* Per round, the shift of each of its 16 steps (4 distinct values). */
static const uint8 Shifts[4][4] = {
	{7, 12, 17, 22}, {5, 9, 14, 20}, {4, 11, 16, 23}, {6, 10, 15, 21}
};

/* floor(abs(sin(i + 1)) * 2^32), i = 0 .. 63 */
static const uint32 Sines[64] = {
	0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a,
	0xa8304613, 0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be,
	0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340,
	0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
	0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8,
	0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c,
	0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
	0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
	0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92,
	0xffeff47d, 0x85845dd1, 0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1,
	0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391
};

static inline uint32
rotl(uint32 x, int n)
{
	return (x << n) | (x >> (32 - n));
}

/* One 64-byte block into the state. */
static void
md5_block(uint32 *state, const uint8 *block)
{
	uint32		m[16];
	uint32		a = state[0];
	uint32		b = state[1];
	uint32		c = state[2];
	uint32		d = state[3];

	for (int i = 0; i < 16; i++)
		m[i] = (uint32) block[4 * i] | (uint32) block[4 * i + 1] << 8 |
			(uint32) block[4 * i + 2] << 16 | (uint32) block[4 * i + 3] << 24;
	for (int i = 0; i < 64; i++)
	{
		int			round = i / 16;
		uint32		f;
		int			g;
		uint32		tmp;

		switch (round)
		{
			case 0:
				f = (b & c) | (~b & d);
				g = i;
				break;
			case 1:
				f = (d & b) | (~d & c);
				g = (5 * i + 1) % 16;
				break;
			case 2:
				f = b ^ c ^ d;
				g = (3 * i + 5) % 16;
				break;
			default:
				f = c ^ (b | ~d);
				g = (7 * i) % 16;
				break;
		}
		tmp = d;
		d = c;
		c = b;
		b = b + rotl(a + f + Sines[i] + m[g], Shifts[round][i % 4]);
		a = tmp;
	}
	state[0] += a;
	state[1] += b;
	state[2] += c;
	state[3] += d;
}

/* The MD5 of len bytes at data, into out[16]. */
void
concord_md5(const void *data, size_t len, uint8 *out)
{
	const uint8 *p = data;
	uint32		state[4] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};
	uint8		tail[128];
	size_t		rest;
	size_t		tail_len;
	uint64		bits = (uint64) len * 8;

	for (; len >= 64; len -= 64, p += 64)
		md5_block(state, p);
	/* the last bytes, a 1 bit, zeros, and the length in bits */
	rest = len;
	memcpy(tail, p, rest);
	tail[rest] = 0x80;
	tail_len = rest + 1 + 8 <= 64 ? 64 : 128;
	memset(tail + rest + 1, 0, tail_len - rest - 1);
	for (int i = 0; i < 8; i++)
		tail[tail_len - 8 + i] = (uint8) (bits >> (8 * i));
	md5_block(state, tail);
	if (tail_len == 128)
		md5_block(state, tail + 64);
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 4; j++)
			out[4 * i + j] = (uint8) (state[i] >> (8 * j));
}

# concord: multi-leader logical replication for PostgreSQL (PGXS build)

EXTENSION   = concord
EXTVERSION  = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" concord.control)

MODULE_big  = concord
OBJS = \
	src/concord.o \
	src/launcher.o \
	src/catalog.o \
	src/relcheck.o \
	src/node_api.o \
	src/set_api.o \
	src/conflict.o \
	src/own_commits.o \
	src/handler.o \
	src/tombstone_gc.o \
	src/origin.o \
	src/output.o \
	src/output_rel.o \
	src/proto.o \
	src/proto_describe.o \
	src/shmem.o \
	src/remote.o \
	src/manager.o \
	src/apply.o \
	src/apply_rel.o \
	src/apply_row.o \
	src/sync.o \
	src/sub_api.o \
	src/conflict_api.o \
	src/seen.o \
	src/tombstone.o

# The install script is built from one source file; upgrade scripts
# (sql/concord--A--B.sql) are shipped as written.
DATA_built  = sql/$(EXTENSION)--$(EXTVERSION).sql
DATA        = $(filter-out sql/$(EXTENSION)--$(EXTVERSION).sql,$(wildcard sql/$(EXTENSION)--*--*.sql))

PG_CONFIG  ?= pg_config
# Our code is built with -Wall -Wextra -Werror; the server headers are
# included as system headers because they do not compile cleanly under
# -Wextra themselves (unused parameters in inline functions).
PG_CFLAGS   = -Wall -Wextra -Werror
# Objects are rebuilt when a header they include changes (PGXS does not
# track header dependencies without --enable-depend).  In CFLAGS, not
# CPPFLAGS, so that only the compiler of the objects writes src/*.d.
PG_CFLAGS  += -MMD -MP
PG_CPPFLAGS = -isystem $(shell $(PG_CONFIG) --includedir-server) -I$(libpq_srcdir)
SHLIB_LINK_INTERNAL = $(libpq)

# pg_regress runs on a temporary instance with concord preloaded.
REGRESS      = $(patsubst sql/%.sql,%,$(sort $(filter-out sql/$(EXTENSION)%.sql,$(wildcard sql/*.sql))))
REGRESS_OPTS = --temp-instance=./tmp_check --temp-config=test/regress.conf --no-locale --encoding=UTF8

EXTRA_CLEAN = tmp_check results regression.diffs regression.out log src/*.d


PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

sql/$(EXTENSION)--$(EXTVERSION).sql: sql/$(EXTENSION).sql
	cp $< $@

-include $(OBJS:.o=.d)

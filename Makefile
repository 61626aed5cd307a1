# concord: multi-leader logical replication for PostgreSQL (PGXS build)

EXTENSION   = concord
EXTVERSION  = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" concord.control)

MODULE_big  = concord

# src/ is cut into one folder per subsystem, listed here from the bottom of
# the layering up: a folder's files include headers of their own folder,
# of the folders before it in this list, and src/concord.h and
# src/compat.h; never of a folder after it (test/t/000_layout.pl checks).
# src/config.c (settings) and src/concord.c (_PG_init) sit on top.
CONCORD_FOLDERS = catalog remote shmem proto conflict capture apply workers antientropy api
OBJS = $(patsubst %.c,%.o,$(sort $(foreach d,$(CONCORD_FOLDERS),$(wildcard src/$(d)/*.c)))) \
	src/config.o \
	src/concord.o

# The install script of the current version is built from sql/concord.sql;
# the install scripts of earlier versions (kept so that an upgrade from them
# can be tested) and the upgrade scripts sql/concord--A--B.sql are shipped as
# written.
DATA_built  = sql/$(EXTENSION)--$(EXTVERSION).sql
DATA        = $(filter-out sql/$(EXTENSION)--$(EXTVERSION).sql,$(wildcard sql/$(EXTENSION)--*.sql))

PG_CONFIG  ?= pg_config
# Our code is built with -Wall -Wextra -Werror; the server headers are
# included as system headers because they do not compile cleanly under
# -Wextra themselves (unused parameters in inline functions).
PG_CFLAGS   = -Wall -Wextra -Werror
# Objects are rebuilt when a header they include changes (PGXS does not
# track header dependencies without --enable-depend).  In CFLAGS, not
# CPPFLAGS, so that only the compiler of the objects writes src/*.d.
PG_CFLAGS  += -MMD -MP
PG_CPPFLAGS = -isystem $(shell $(PG_CONFIG) --includedir-server) -I$(libpq_srcdir) -Isrc
SHLIB_LINK_INTERNAL = $(libpq)

# pg_regress runs on a temporary instance with concord preloaded.
REGRESS      = $(patsubst sql/%.sql,%,$(sort $(filter-out sql/$(EXTENSION)%.sql,$(wildcard sql/*.sql))))
REGRESS_OPTS = --temp-instance=./tmp_check --temp-config=test/regress.conf --no-locale --encoding=UTF8

EXTRA_CLEAN = tmp_check results regression.diffs regression.out log $(OBJS:.o=.d)


PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

sql/$(EXTENSION)--$(EXTVERSION).sql: sql/$(EXTENSION).sql
	cp $< $@

-include $(OBJS:.o=.d)

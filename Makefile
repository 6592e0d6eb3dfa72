# make && sudo make install [PREFIX=/usr/local] [DESTDIR=]
PREFIX ?= /usr/local
DESTDIR ?=

all:
	cargo build --release

install: all
	bash scripts/install.sh --no-build --prefix "$(PREFIX)" $(if $(DESTDIR),--destdir "$(DESTDIR)")

test:
	bash scripts/test.sh

.PHONY: all install test

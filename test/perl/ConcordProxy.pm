# ConcordProxy: a TCP proxy on 127.0.0.1 in front of a node's unix socket,
# for the fault-injection tests.  It runs in a child process.
#
#   my $proxy = ConcordProxy->new($node, rewrite => [ [ 'from', 'to' ] ]);
#   my $dsn = $proxy->connstr('postgres');   # host=127.0.0.1 port=...
#   $proxy->freeze;   # open connections stop passing bytes (both ways);
#                     # new connections pass (a NAT forgetting its flows)
#   $proxy->cut;      # open connections are closed
#   $proxy->stop;
#
# port: listen on this port (default: any free one), e.g. to put another
# proxy where a stopped one was.
#
# rewrite: pairs of byte strings of equal length, replaced in what the node
# sends (a peer that lies, without having to speak the protocol: lengths
# stay right).  A match split across two reads is still replaced: the last
# bytes of a read are held back until more arrives or the connection is
# quiet for a moment.

package ConcordProxy;

use strict;
use warnings;

use Carp;
use IO::Select;
use IO::Socket::INET;
use IO::Socket::UNIX;
use POSIX ();
use Time::HiRes ();

sub new
{
	my ($class, $node, %opts) = @_;
	my $listen = IO::Socket::INET->new(
		LocalAddr => '127.0.0.1',
		LocalPort => $opts{port} // 0,
		Listen    => 16,
		ReuseAddr => 1,
		Proto     => 'tcp') or croak "proxy: cannot listen: $!";
	my $self = bless {
		port    => $listen->sockport,
		target  => $node->host . '/.s.PGSQL.' . $node->port,
		rewrite => $opts{rewrite} // [],
	}, $class;
	foreach my $r (@{ $self->{rewrite} })
	{
		croak 'proxy: rewrite pairs must be of equal length'
		  unless length($r->[0]) == length($r->[1]) && length($r->[0]) > 0;
	}
	my $pid = fork();
	croak "proxy: fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		$self->_run($listen);
		POSIX::_exit(0);
	}
	close $listen;
	$self->{pid} = $pid;
	return $self;
}

sub port { return $_[0]->{port}; }

sub connstr
{
	my ($self, $dbname) = @_;
	return "host=127.0.0.1 port=$self->{port} dbname=$dbname";
}

sub freeze { kill 'USR1', $_[0]->{pid}; return; }
sub cut    { kill 'USR2', $_[0]->{pid}; return; }

sub stop
{
	my ($self) = @_;
	return unless $self->{pid};
	kill 'TERM', $self->{pid};
	waitpid($self->{pid}, 0);
	delete $self->{pid};
	return;
}

sub DESTROY { $_[0]->stop; }

# --- the child ---------------------------------------------------------------

sub _run
{
	my ($self, $listen) = @_;
	my ($freeze, $cut, $done) = (0, 0, 0);
	local $SIG{USR1} = sub { $freeze = 1; };
	local $SIG{USR2} = sub { $cut = 1; };
	local $SIG{TERM} = sub { $done = 1; };
	my $maxpat = 0;
	foreach my $r (@{ $self->{rewrite} })
	{
		$maxpat = length($r->[0]) if length($r->[0]) > $maxpat;
	}

	# connection: { client, server, frozen, held (server->client tail) }
	my @conns;
	while (!$done)
	{
		if ($freeze)
		{
			$_->{frozen} = 1 foreach @conns;
			$freeze = 0;
		}
		if ($cut)
		{
			foreach my $c (@conns)
			{
				close $c->{client};
				close $c->{server};
			}
			@conns = ();
			$cut = 0;
		}
		my $sel = IO::Select->new($listen);
		foreach my $c (grep { !$_->{frozen} } @conns)
		{
			$sel->add($c->{client}, $c->{server});
		}
		my @ready = $sel->can_read(0.05);
		my %busy;
		foreach my $fh (@ready)
		{
			if ($fh == $listen)
			{
				my $client = $listen->accept or next;
				my $server = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $self->{target});
				if (!$server)
				{
					close $client;
					next;
				}
				push @conns, { client => $client, server => $server, frozen => 0, held => '' };
				next;
			}
			my ($c) = grep { $_->{client} == $fh || $_->{server} == $fh } @conns;
			next unless $c && !$c->{frozen};
			my $buf;
			my $n = sysread($fh, $buf, 65536);
			if (!$n)
			{
				close $c->{client};
				close $c->{server};
				@conns = grep { $_ != $c } @conns;
				next;
			}
			if ($fh == $c->{client})
			{
				_write_all($c->{server}, $buf);
			}
			else
			{
				$busy{$c} = 1;
				my $data = $c->{held} . $buf;
				foreach my $r (@{ $self->{rewrite} })
				{
					my ($from, $to) = @$r;
					$data =~ s/\Q$from\E/$to/g;
				}
				my $keep = $maxpat > 1 ? $maxpat - 1 : 0;
				$keep = length($data) if $keep > length($data);
				$c->{held} = substr($data, length($data) - $keep);
				_write_all($c->{client}, substr($data, 0, length($data) - $keep));
			}
		}
		# Quiet connections get what was held back.
		foreach my $c (@conns)
		{
			next if $c->{frozen} || $busy{$c} || $c->{held} eq '';
			_write_all($c->{client}, $c->{held});
			$c->{held} = '';
		}
	}
	foreach my $c (@conns)
	{
		close $c->{client};
		close $c->{server};
	}
	return;
}

sub _write_all
{
	my ($fh, $data) = @_;
	my $off = 0;
	while ($off < length($data))
	{
		my $n = syswrite($fh, $data, length($data) - $off, $off);
		return unless defined $n;
		$off += $n;
	}
	return;
}

1;

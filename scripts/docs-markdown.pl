#!/usr/bin/perl
# SPDX-License-Identifier: BSL-1.0
# Doxygen input filter for README.md, CHANGELOG.md and docs/*.md (see Doxyfile): makes the links
# written for GitHub work in the reference. Doxygen 1.9.4 gives headings no GitHub-style ids and
# keeps section labels in one namespace for all pages, so each heading gets the label
# "<page>-<github id>" and links to "#id", "page.md" and "page.md#id" are rewritten to match.
# Links to other files of the repository (LICENSE, examples/) have no page in the reference:
# they become the path as code. Fenced blocks and code spans are left alone.
use strict;
use warnings;
use Cwd qw(getcwd);

# Doxygen names the file by its absolute path and runs this from the repository's root.
my $file = $ARGV[0];
my $root = getcwd() . '/';
$file = substr($file, length $root) if index($file, $root) == 0;
my ($dir) = $file =~ m{^(.*/)?[^/]*$};
$dir //= '';
$dir =~ s{^\./}{};

sub page_key {
  my ($path) = @_;
  my ($base) = $path =~ m{([^/]+)\.md$}i;
  return lc $base;
}
my $key = page_key($file);

# The repository-relative form of a link target written in this file.
sub resolve {
  my ($target) = @_;
  my $p = $dir . $target;
  1 while $p =~ s{(^|/)(?!\.\./)[^/]+/\.\./}{$1};
  $p =~ s{^\./}{};
  return $p;
}

# GitHub's heading id: lower case, punctuation dropped, each space a hyphen.
sub github_id {
  my ($text) = @_;
  $text =~ s/\[([^\]]*)\]\([^)]*\)/$1/g;
  $text = lc $text;
  $text =~ s/[^a-z0-9 _-]//g;
  $text =~ s/ /-/g;
  return $text;
}

sub label {
  my ($page, $id) = @_;
  return $page eq 'readme' ? 'index' : $page unless length $id;
  return "$page-$id";
}

sub rewrite_link {
  my ($bang, $text, $target) = @_;
  return "$bang\[$text\]($target)" if $bang || $target =~ m{^[a-z][a-z0-9+.-]*:}i;
  if ($target =~ /^#(.*)$/) {
    return "[$text](#" . label($key, $1) . ")";
  }
  if ($target =~ m{^([^#]*\.md)(?:#(.*))?$}i) {
    return "[$text](#" . label(page_key($1), $2 // '') . ")";
  }
  my $path = resolve($target);
  (my $plain = $text) =~ s/`//g;
  s{/$}{} for $plain, $path;
  return "`$path`" if $plain eq $path || $plain eq $target;
  return "$text (`$path`)";
}

my %seen;
my $fence;
my $titled = 0;
while (my $line = <>) {
  if (defined $fence) {
    undef $fence if $line =~ /^\s*\Q$fence\E/;
    print $line;
    next;
  }
  if ($line =~ /^\s*(```|~~~)/) {
    $fence = $1;
    print $line;
    next;
  }
  if ($line =~ /^(#{1,6})\s+(.*?)\s*$/) {
    my ($hashes, $title) = ($1, $2);
    my $id = github_id($title);
    my $n = $seen{$id}++;
    $id .= "-$n" if $n;
    # The first heading is the page's title and names it; README's is the main page, which
    # doxygen names index itself.
    if (length($hashes) == 1 && !$titled++) {
      $line = $key eq 'readme' ? "# $title\n" : "# $title {#" . label($key, '') . "}\n";
    } else {
      $line = "$hashes $title {#" . label($key, $id) . "}\n";
    }
  }
  # Code spans are matched first and kept as they are; a link's text may hold one.
  $line =~ s{(`+).*?\1|(!?)\[((?:`[^`]*`|[^\]`])*)\]\(([^)\s]+)\)}
            {defined $4 ? rewrite_link($2, $3, $4) : $&}ge;
  print $line;
}

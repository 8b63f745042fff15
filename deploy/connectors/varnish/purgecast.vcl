vcl 4.1;
# purgecast sink connector VCL for Varnish 7.x (tested with 7.1.1 + varnish-modules 0.20).
#
# Request formats (all must come from the `purgers` ACL, otherwise 405):
#   PURGE <url>  + Host                         -> hard purge of that host+url (all Vary variants)
#   PURGE <url>  + Host + Purgecast-Soft: 1     -> soft purge (ttl=0, grace/keep kept: stale served
#                                                  while a background fetch refreshes)
#   PURGE /      + Xkey-Purge: "t1 t2"          -> xkey.purge() (Purgecast-Soft: 1 -> xkey.softpurge())
#   BAN   /      + Purgecast-Ban-Host: h [+ Purgecast-Ban-Prefix: <regex-escaped path prefix>]
#   BAN   /      + Purgecast-Ban-All: 1
# All purge responses are 200 and carry `Purgecast-Purged: N` (objects affected; bans: absent).
# Bans answer 200 on success, 400 + `Purgecast-Error: <std.ban_error()>` on a bad expression.
#
# The test harness substitutes {{ORIGIN_HOST}} / {{ORIGIN_PORT}} literally.

import std;
import xkey;
import purge;

backend origin {
    .host = "{{ORIGIN_HOST}}";
    .port = "{{ORIGIN_PORT}}";
}

acl purgers {
    "127.0.0.1";
    "::1";
}

sub vcl_recv {
    # Never trust these from clients: they are internal markers / object metadata.
    unset req.http.x-purgecast-cache;
    unset req.http.x-purgecast-purged;

    # Hostnames are case-insensitive; normalise so "Example.com" and "example.com"
    # share one object and purges/bans (which compare literally) match. A port in
    # the Host header is kept (it is part of the hash and of x-purgecast-host).
    if (req.http.host) {
        set req.http.host = std.tolower(req.http.host);
    }

    if (req.method == "PURGE" || req.method == "BAN") {
        if (client.ip !~ purgers) {
            return (synth(405, "Not allowed"));
        }
    }

    if (req.method == "PURGE") {
        if (req.http.Xkey-Purge) {
            # Tag purge. xkey accepts space- and/or comma-separated keys.
            if (req.http.Purgecast-Soft == "1") {
                set req.http.x-purgecast-purged = xkey.softpurge(req.http.Xkey-Purge);
            } else {
                set req.http.x-purgecast-purged = xkey.purge(req.http.Xkey-Purge);
            }
            return (synth(200, "Purged"));
        }
        # URL purge: look the object up (vcl_hash = url + host), then purge in
        # vcl_hit/vcl_miss with vmod purge. No hash_always_miss here on purpose: if a
        # fetch for this URL is in flight, the PURGE waits for it on the waiting list
        # (up to the backend's first_byte_timeout) and then purges the freshly fetched
        # object. This avoids the busy-object race (varnish-cache#1420) that
        # return(purge) has. A *soft* purge of such an object acts like a hard one
        # (its ttl becomes negative relative to the PURGE's start, lookups skip it).
        return (hash);
    }

    if (req.method == "BAN") {
        if (req.http.Purgecast-Ban-All == "1") {
            # obj.* only => lurker-friendly; obj.status != 0 matches every object.
            if (!std.ban("obj.status != 0")) {
                return (synth(400, std.ban_error()));
            }
        } else if (req.http.Purgecast-Ban-Host) {
            # obj.http.x-purgecast-* are set in vcl_backend_response, so the ban only
            # uses obj.* and the ban lurker can evaluate it in the background.
            # The prefix must be regex-escaped by the sender and contain no whitespace
            # (ban args are whitespace-delimited; use \s).
            if (req.http.Purgecast-Ban-Prefix) {
                if (!std.ban("obj.http.x-purgecast-host == " + std.tolower(req.http.Purgecast-Ban-Host) +
                        " && obj.http.x-purgecast-url ~ ^" + req.http.Purgecast-Ban-Prefix)) {
                    return (synth(400, std.ban_error()));
                }
            } else {
                if (!std.ban("obj.http.x-purgecast-host == " + std.tolower(req.http.Purgecast-Ban-Host))) {
                    return (synth(400, std.ban_error()));
                }
            }
        } else {
            return (synth(400, "Need Purgecast-Ban-Host or Purgecast-Ban-All: 1"));
        }
        return (synth(200, "Banned"));
    }
    # everything else: builtin vcl_recv
}

sub purgecast_url_purge {
    if (req.http.Purgecast-Soft == "1") {
        # ttl=0, grace/keep untouched (-1s) => object stays usable for grace + IMS/INM.
        set req.http.x-purgecast-purged = purge.soft(0s, -1s, -1s);
    } else {
        set req.http.x-purgecast-purged = purge.hard();
    }
    return (synth(200, "Purged"));
}

sub vcl_hit {
    if (req.method == "PURGE") {
        call purgecast_url_purge;
    }
    if (obj.ttl <= 0s) {
        # stale object delivered in grace (background fetch started by core)
        set req.http.x-purgecast-cache = "HIT-STALE";
    } else {
        set req.http.x-purgecast-cache = "HIT";
    }
}

sub vcl_miss {
    # vmod purge must be called from both hit and miss (miss: objects only in
    # grace/keep, or none at all -> Purgecast-Purged: 0).
    if (req.method == "PURGE") {
        call purgecast_url_purge;
    }
    set req.http.x-purgecast-cache = "MISS";
}

sub vcl_pass {
    set req.http.x-purgecast-cache = "PASS";
}

sub vcl_backend_fetch {
    # markers set in vcl_hit end up in background-fetch bereqs; don't leak them.
    unset bereq.http.x-purgecast-cache;
}

sub vcl_backend_response {
    # Tags: Surrogate-Key is space separated, Cache-Tag comma separated; xkey
    # itself accepts both separators, but we normalise to single spaces so the
    # de-duplication below works. std.collect merges repeated header lines.
    std.collect(beresp.http.Surrogate-Key, " ");
    std.collect(beresp.http.Cache-Tag, " ");
    std.collect(beresp.http.xkey, " ");
    if (beresp.http.Surrogate-Key || beresp.http.Cache-Tag) {
        set beresp.http.xkey = regsuball(
            beresp.http.xkey + " " + beresp.http.Surrogate-Key + " " + beresp.http.Cache-Tag,
            "[,\s]+", " ");
        set beresp.http.xkey = regsuball(beresp.http.xkey, "^ | $", "");
        # De-duplicate: drop every key that occurs again later in the list. xkey does
        # NOT dedupe: an object indexed twice under a key is counted twice by
        # xkey.purge() (origins usually send the same tags in both headers).
        set beresp.http.xkey = regsuball(beresp.http.xkey,
            "(?<=^| )(\S+) (?=(?:\S+ )*\1(?: |$))", "");
    }
    # Lurker-friendly ban targets (bans must only reference obj.*).
    set beresp.http.x-purgecast-host = bereq.http.host;
    set beresp.http.x-purgecast-url = bereq.url;
    # Keep objects for 1h past TTL so soft purges (ttl=0) serve stale while refreshing.
    set beresp.grace = 1h;
}

sub vcl_deliver {
    unset resp.http.x-purgecast-host;
    unset resp.http.x-purgecast-url;
    unset resp.http.xkey;
    # HIT / HIT-STALE / MISS / PASS, plus hit counter of the object.
    set resp.http.X-Cache = req.http.x-purgecast-cache;
    set resp.http.X-Cache-Hits = obj.hits;
}

sub vcl_synth {
    if (req.method == "PURGE" && req.http.x-purgecast-purged) {
        set resp.http.Purgecast-Purged = req.http.x-purgecast-purged;
    }
    if (resp.status == 400 && (req.method == "BAN")) {
        set resp.http.Purgecast-Error = resp.reason;
    }
    if (req.method == "PURGE" || req.method == "BAN") {
        set resp.http.Content-Type = "text/plain; charset=utf-8";
        set resp.body = "" + resp.status + " " + resp.reason + {"
"};
        return (deliver);
    }
}

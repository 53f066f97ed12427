#!/bin/bash
# `edgecap check-config FILE`: the shipped example validates; a valid file is
# summarised with secrets as ***; every rejection class exits 78 (EX_CONFIG)
# with "FILE:LINE: [section] key: what was expected" on stderr (or a clear
# message for unsafe file modes); a missing file exits 66 (EX_NOINPUT); and no
# message ever carries a secret.
# shellcheck source=lib/tap.sh
. "$(dirname "$0")/lib/tap.sh"

plan 51

SAS=$(new_secret "sv=2025-11-05&sr=c&sp=cw&sig=")
BASE=$T/base.conf
write_sas_config "$BASE" "$SAS"

# Writes $T/NAME.conf: the base file through a sed script, mode 600.
variant() { # NAME SED-SCRIPT
    (umask 077 && sed -e "$2" "$BASE" >"$T/$1.conf")
    echo "$T/$1.conf"
}

# A string as an extended regex matching itself.
ere() { printf '%s' "$1" | sed 's/[][\.*^$+?(){}|/]/\\&/g'; }

# "edgecap: FILE:LINE: MESSAGE", where the section and key that the line is in
# may be named too ("[capture]: ", "id: ", "[device] tags: ").
want_err_at() { # FILE LINE MESSAGE-START
    want_err_re "^edgecap: $(ere "$1:$2: ")(\[[a-z]+\]: |(\[[a-z]+\] )?[a-z_]+: )?$(ere "$3")"
}

# One rejection: exit 78, "edgecap: FILE:LINE: KEY: MESSAGE" on stderr,
# nothing on stdout, and the SAS token nowhere.
reject() { # DESCRIPTION FILE LINE KEY MESSAGE-START
    local desc=$1 f=$2 line=$3 key=$4 msg=$5
    ec check-config "$f"
    want_rc 78
    [ -n "$line" ] || fail_because "test bug: no line number for $desc"
    if [ -n "$key" ]; then
        want_err_fixed "edgecap: $f:$line: $key: $msg"
    else
        want_err_at "$f" "$line" "$msg"
    fi
    want_empty "$OUT"
    want_no_secret "$SAS" "$OUT" "$ERR"
    verdict "$desc"
}

# ---- accepted files -----------------------------------------------------------

ec check-config config/edgecap.conf.example
want_rc 0
want_out_re '^# config/edgecap\.conf\.example: valid \(sha256 [0-9a-f]{64}\)$'
for s in device capture encoder spool upload tls auth speech logging metrics consent; do
    want_out_re "^\[$s\]$"
done
want_out_re '^id = edge-0001$'
want_out_re '^sas_token = \(unset\)$'
want_empty "$ERR"
verdict "the shipped example validates (exit 0) and is summarised section by section"

sum=$(sha256sum config/edgecap.conf.example | cut -d' ' -f1)
REASONS=()
want_out_re "\(sha256 $sum\)$"
verdict "the summary names the file's SHA-256"

ec check-config "$BASE"
want_rc 0
want_out_re "^# .*base\.conf: valid "
want_out_re '^sas_token = \*\*\*$'
want_out_re '^mode = sas$'
want_no_secret "$SAS" "$OUT" "$ERR"
want_empty "$ERR"
verdict "inline sas_token in a 0600 file: exit 0, shown as ***, never in stdout or stderr"

KEY1=$(new_secret "k1") KEY2=$(new_secret "k2")
f=$(variant speech_key "
s#^endpoint = .*#endpoint = https://edgecap-speech.cognitiveservices.azure.com#
/^container = /d
s#^allowed_hosts = .*#allowed_hosts = edgecap-speech.cognitiveservices.azure.com#
s#^target = blob#target = speech#
s#^mode = sas#mode = key#
s#^sas_token = .*#key_primary = $KEY1\nkey_secondary = $KEY2#")
ec check-config "$f"
want_rc 0
want_out_re '^key_primary = \*\*\*$'
want_out_re '^key_secondary = \*\*\*$'
want_out_re '^target = speech$'
want_no_secret "$KEY1" "$OUT" "$ERR"
want_no_secret "$KEY2" "$OUT" "$ERR"
verdict "inline subscription keys (target speech): exit 0, shown as ***, never printed"

(umask 077 && printf '%s\n' "$SAS" >"$T/sas.token")
f=$(variant secret_file "s#^sas_token = .*#sas_token_file = $T/sas.token#")
ec check-config "$f"
want_rc 0
want_out_re '^sas_token = \*\*\*$'
want_no_secret "$SAS" "$OUT" "$ERR"
verdict "sas_token_file with mode 600: exit 0, shown as ***, never printed"

f=$(variant wildcard "s#^allowed_hosts = .*#allowed_hosts = *.blob.core.windows.net#")
ec check-config "$f"
want_rc 0
want_out_re '^allowed_hosts = \*\.blob\.core\.windows\.net$'
verdict "allowed_hosts *.blob.core.windows.net admits the account's endpoint"

f=$(variant crlf 's/$/\r/')
ec check-config "$f"
want_rc 0
verdict "a file with CRLF line ends validates"

# ---- rejections: one file per class, with the line and key it names ----------

f=$(variant unknown_section '$a [bogus]\nanswer = 42')
reject "unknown section: exit 78, names FILE:LINE and [bogus]" \
    "$f" "$(line_of "$f" '^\[bogus\]$')" "[bogus]" "unknown section"

f=$(variant empty_unknown_section '$a [bogus]')
reject "unknown empty section at the end of the file: exit 78" \
    "$f" "$(line_of "$f" '^\[bogus\]$')" "[bogus]" "unknown section"

f=$(variant unknown_key '/^\[capture\]$/a ratehz = 16000')
reject "unknown key: exit 78, names FILE:LINE and [capture] ratehz" \
    "$f" "$(line_of "$f" '^ratehz ')" "[capture] ratehz" "unknown key"

f=$(variant outside '1i id = early')
reject "key before any section: exit 78" \
    "$f" 1 "" "key outside any section"

f=$(variant bad_int 's/^channels = 1$/channels = two/')
reject "bad type (integer): exit 78, says an integer was expected" \
    "$f" "$(line_of "$f" '^channels ')" "[capture] channels" 'expected an integer, got "two"'

f=$(variant huge_int 's/^channels = 1$/channels = 99999999999999999999/')
reject "integer that overflows: exit 78, not wrapped around" \
    "$f" "$(line_of "$f" '^channels ')" "[capture] channels" 'expected an integer'

f=$(variant bad_bool 's/^require_mlock = off$/require_mlock = maybe/')
reject "bad type (boolean): exit 78, lists on|off" \
    "$f" "$(line_of "$f" '^require_mlock ')" "[device] require_mlock" 'expected on|off'

f=$(variant bad_enum 's/^target = blob$/target = ftp/')
reject "bad enum value: exit 78, lists blob|speech" \
    "$f" "$(line_of "$f" '^target ')" "[upload] target" 'expected blob|speech, got "ftp"'

f=$(variant bad_string 's/^container = audio$/container = Audio_Files/')
reject "bad string (container name): exit 78, says what a name looks like" \
    "$f" "$(line_of "$f" '^container ')" "[upload] container" 'expected 3-63 of a-z 0-9 -'

f=$(variant out_of_range 's/^segment_seconds = 60$/segment_seconds = 0/')
reject "out of range: exit 78, gives the range" \
    "$f" "$(line_of "$f" '^segment_seconds ')" "[capture] segment_seconds" \
    'expected 1..3600, got 0'

f=$(variant not_in_set 's/^rate_hz = 16000$/rate_hz = 44100/')
reject "value not in its set: exit 78, lists the allowed values" \
    "$f" "$(line_of "$f" '^rate_hz ')" "[capture] rate_hz" \
    'expected 8000, 16000 or 48000, got 44100'

f=$(variant quota '/^\[spool\]$/a quota_bytes = 1024')
reject "64-bit value out of range: exit 78, gives the range" \
    "$f" "$(line_of "$f" '^quota_bytes ')" "[spool] quota_bytes" \
    'expected 1048576..1099511627776, got 1024'

f=$(variant no_id '/^id = /d')
reject "missing required key: exit 78 at its section's line" \
    "$f" "$(line_of "$f" '^\[device\]$')" "[device] id" "required key missing"

f=$(variant no_container '/^container = /d')
reject "missing key required by another (container for target blob): exit 78" \
    "$f" "$(line_of "$f" '^\[upload\]$')" "[upload] container" \
    "required key missing with [upload] target = blob"

f=$(variant no_token '/^sas_token = /d')
reject "missing secret for mode sas: exit 78, names sas_token and sas_token_file" \
    "$f" "$(line_of "$f" '^\[auth\]$')" "[auth] sas_token" \
    "required key missing with [auth] mode = sas (or give sas_token_file or sas_token_credential)"

f=$(variant http 's#^endpoint = https://#endpoint = http://#')
reject "http:// endpoint: exit 78, says https:// is expected" \
    "$f" "$(line_of "$f" '^endpoint ')" "[upload] endpoint" "expected an https:// URL"

f=$(variant not_allowed 's#^endpoint = .*#endpoint = https://exfil.example.net#')
reject "endpoint host not on allowed_hosts: exit 78, names the host" \
    "$f" "$(line_of "$f" '^endpoint ')" "[upload] endpoint" \
    'host "exfil.example.net" is not on [tls] allowed_hosts'

f=$(variant not_allowed_2 "/^endpoint = /a secondary_endpoint = https://edgecaptest-2.blob.core.windows.net")
reject "secondary endpoint host not on allowed_hosts: exit 78" \
    "$f" "$(line_of "$f" '^secondary_endpoint ')" "[upload] secondary_endpoint" \
    'host "edgecaptest-2.blob.core.windows.net" is not on [tls] allowed_hosts'

f=$(variant wildcard_depth "s#^allowed_hosts = .*#allowed_hosts = *.core.windows.net#")
reject "a wildcard stands for one label only: *.core.windows.net does not admit a.blob.core.windows.net" \
    "$f" "$(line_of "$f" '^endpoint ')" "[upload] endpoint" \
    'host "edgecaptest.blob.core.windows.net" is not on [tls] allowed_hosts'

f=$(variant twice '/^id = /a id = test-0002')
reject "key given twice: exit 78 at the second, names the first line" \
    "$f" "$(line_of "$f" '^id = test-0002')" "[device] id" \
    "key given twice (first at line $(line_of "$f" '^id = test-0001'))"

f=$(variant long_line "s#^tags = .*##; /^require_mlock/a tags = site=$(printf 'x%.0s' $(seq 1 250))")
reject "line longer than libinih's buffer: exit 78, not silently truncated" \
    "$f" "$(line_of "$f" '^tags ')" "" "line longer than"

f=$(variant syntax "/^\[capture\]\$/a this line has no equals sign")
reject "syntax error: exit 78 at the line" \
    "$f" "$(line_of "$f" '^this line')" "" "syntax error"

# ---- file ownership and modes -----------------------------------------------

f=$(variant group_writable 's/^; edgecap system test.*/; group-writable/')
chmod 620 "$f"
ec check-config "$f"
want_rc 78
want_err_fixed "edgecap: $f: $f is writable by group or others (mode 0620)"
want_empty "$OUT"
want_no_secret "$SAS" "$ERR"
verdict "group-writable file: exit 78, says so with its mode"

f=$(variant world_writable 's/^; edgecap system test.*/; world-writable/')
chmod 602 "$f"
ec check-config "$f"
want_rc 78
want_err_fixed "is writable by group or others (mode 0602)"
verdict "world-writable file: exit 78"

f=$(variant world_readable 's/^; edgecap system test.*/; world-readable/')
chmod 644 "$f"
ec check-config "$f"
want_rc 78
want_err_fixed "edgecap: $f: $f holds secrets but is readable by group or others (mode 0644)"
want_empty "$OUT"
want_no_secret "$SAS" "$OUT" "$ERR"
verdict "inline secret in a world-readable file: exit 78, the secret not shown"

f=$(variant group_readable 's/^; edgecap system test.*/; group-readable/')
chmod 640 "$f"
ec check-config "$f"
want_rc 78
want_err_fixed "holds secrets but is readable by group or others (mode 0640)"
want_no_secret "$SAS" "$OUT" "$ERR"
verdict "inline secret in a group-readable file: exit 78"

f=$(variant no_secret_readable '/^sas_token = /d; s/^mode = sas$/mode = entra/;
/^mode = /a tenant_id = 00000000-0000-0000-0000-000000000000\nclient_id = 11111111-1111-1111-1111-111111111111\nauthority_host = https://edgecaptest.blob.core.windows.net')
chmod 644 "$f"
ec check-config "$f"
want_rc 0
verdict "a file without secrets may be world-readable (exit 0)"

if [ "$(id -u)" = 0 ]; then
    f=$(variant foreign_owner 's/^; edgecap system test.*/; owned by nobody/')
    chown 65534:65534 "$f"
    ec check-config "$f"
    want_rc 78
    want_err_fixed "edgecap: $f: $f is owned by uid 65534, not by the running user (uid 0)"
    want_no_secret "$SAS" "$OUT" "$ERR"
    verdict "file owned by another user: exit 78, names both uids"
else
    skip "file owned by another user: exit 78, names both uids" "needs root to chown"
fi

ec check-config "$T/does-not-exist.conf"
want_rc 66
want_err_fixed "edgecap: $T/does-not-exist.conf: cannot open $T/does-not-exist.conf: No such file or directory"
want_empty "$OUT"
verdict "missing file: exit 66 (EX_NOINPUT), says it cannot be opened"

ec check-config "$T"
want_rc 78
want_err_fixed "is not a regular file"
verdict "a directory instead of a file: exit 78, not a regular file"

# ---- secret files ------------------------------------------------------------

(umask 022 && printf '%s\n' "$SAS" >"$T/sas-readable.token")
f=$(variant secret_file_readable "s#^sas_token = .*#sas_token_file = $T/sas-readable.token#")
reject "sas_token_file readable by others: exit 78 at the key, the secret not shown" \
    "$f" "$(line_of "$f" '^sas_token_file ')" "[auth] sas_token_file" \
    "$T/sas-readable.token holds secrets but is readable by group or others (mode 0644)"

f=$(variant secret_file_missing "s#^sas_token = .*#sas_token_file = $T/no.token#")
reject "sas_token_file that does not exist: exit 78 at the key, names the file" \
    "$f" "$(line_of "$f" '^sas_token_file ')" "[auth] sas_token_file" "cannot open $T/no.token"

f=$(variant secret_both "/^sas_token = /a sas_token_file = $T/sas.token")
reject "sas_token and sas_token_file both set: exit 78" \
    "$f" "$(line_of "$f" '^sas_token_file ')" "[auth] sas_token_file" \
    "set either sas_token or sas_token_file, not both"

# ---- secrets never in error messages ------------------------------------------

f=$(variant next_to_secret '/^sas_token = /a tenant_id = not-a-guid')
reject "bad value on the line after a secret: exit 78 for that key, the secret not shown" \
    "$f" "$(line_of "$f" '^tenant_id ')" "[auth] tenant_id" 'expected a GUID'

f=$(variant secret_no_equals "s#^sas_token = #sas_token #")
ec check-config "$f"
want_rc 78
want_err_fixed "edgecap: $f:$(line_of "$f" '^sas_token '): "
want_no_secret "$SAS" "$OUT" "$ERR"
verdict "secret on a line without ' = ' (split at the token's own '='): exit 78, the secret not shown"

HEXKEY=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
f=$(variant key_no_equals "s#^sas_token = .*#sas_token $HEXKEY#")
ec check-config "$f"
want_rc 78
want_err_at "$f" "$(line_of "$f" '^sas_token ')" "syntax error"
want_no_secret "$HEXKEY" "$OUT" "$ERR"
verdict "hex key on a line without '=': exit 78 syntax error, the key not shown"

# A base64 secret (an HMAC key, an Entra client secret) pasted on a line of its
# own: libinih takes everything before its trailing '=' as the key name.
B64=$(head -c 30 /dev/urandom | base64 | tr '+/' 'xy')
B64=${B64%%=*}0==
f=$(variant b64_own_line "/^sas_token = /a $B64")
ec check-config "$f"
want_rc 78
want_err_fixed "edgecap: $f:$(line_of "$f" "^${B64%%=*}"): "
want_no_secret "${B64%%=*}" "$OUT" "$ERR"
verdict "base64 secret pasted on a line of its own: exit 78, the secret not shown as a key name"

# The portal's "Blob SAS URL" pasted as the endpoint: the query is a SAS.
f=$(variant sas_url "s#^endpoint = .*#endpoint = https://edgecaptest.blob.core.windows.net/?${SAS#*sig=}#")
ec check-config "$f"
want_rc 78
want_err_fixed "edgecap: $f:$(line_of "$f" '^endpoint '): [upload] endpoint: expected an https:// URL"
want_no_secret "${SAS#*sig=}" "$OUT" "$ERR"
verdict "SAS URL pasted as the endpoint: exit 78, the query (a SAS) not quoted back"

f=$(variant secret_misspelt "s#^sas_token = #sas_tokn = #")
reject "secret under a misspelt key: exit 78 unknown key, the secret not shown" \
    "$f" "$(line_of "$f" '^sas_tokn ')" "[auth] sas_tokn" "unknown key"

f=$(variant secret_twice "/^sas_token = /a sas_token = $(new_secret second)")
reject "secret given twice: exit 78, neither value shown" \
    "$f" "$(line_of "$f" '^sas_token = second')" "[auth] sas_token" "key given twice"
sed -n 's/^sas_token = \(second.*\)/\1/p' "$f" >"$T/second"
REASONS=()
want_no_secret "$(cat "$T/second")" "$OUT" "$ERR"
verdict "secret given twice: the second value is not shown either"

f=$(variant secret_empty "s#^sas_token = .*#sas_token =#")
reject "empty secret: exit 78, says a secret must not be empty" \
    "$f" "$(line_of "$f" '^sas_token ')" "[auth] sas_token" "a secret must not be empty"

f=$(variant secret_wrong_target "s#^target = blob#target = speech#; /^container = /d")
reject "SAS token with target speech: exit 78 at [auth] mode, the secret not shown" \
    "$f" "$(line_of "$f" '^mode ')" "[auth] mode" "target speech takes entra or key"

f=$(variant secret_long "s#^sas_token = .*#sas_token = ${SAS//&/\\&}$(printf 'x%.0s' $(seq 1 200))#")
reject "over-long line holding a secret: exit 78, the secret not shown" \
    "$f" "$(line_of "$f" '^sas_token ')" "" "line longer than"

finish

-- A SQLite database written by sipedge before versioned migrations covered every table
-- (schema version 1, commit 560676e), dumped with sqlite3's iterdump.
BEGIN TRANSACTION;
CREATE TABLE cdr (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        call_id TEXT NOT NULL,
        start REAL NOT NULL,
        answer REAL,
        end REAL NOT NULL,
        duration REAL NOT NULL,
        caller TEXT NOT NULL,
        callee TEXT NOT NULL,
        user TEXT NOT NULL,
        source TEXT NOT NULL,
        status INTEGER NOT NULL,
        reason TEXT NOT NULL,
        ended_by TEXT NOT NULL,
        from_tag TEXT NOT NULL,
        to_tag TEXT NOT NULL,
        media TEXT NOT NULL DEFAULT '{}'
    );
INSERT INTO "cdr" VALUES(1,'old-call',1899999900.0,1899999901.0,1899999911.0,10.0,'sip:alice@example.com','sip:bob@example.com','alice@example.com','192.0.2.1',200,'OK','caller','','','{"packets": 5}');
CREATE TABLE dialog (
        call_id TEXT PRIMARY KEY,
        data TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
INSERT INTO "dialog" VALUES('v1-call','{"call_id": "v1-call", "from_tag": "a1", "caller": "sip:alice@example.com", "callee": "sip:bob@example.com", "user": "alice@example.com", "source": "192.0.2.1", "start": 1900000000.0, "state": "trying", "to_tag": "", "early_tags": [], "answer": 0.0, "end": 0.0, "status": 0, "reason": "", "caller_leg": {"uri": "sip:alice@192.0.2.1:6000", "route": [], "dest": "flow:udp~1", "party": "<sip:alice@example.com>;tag=a1", "cseq": 1, "call_id": ""}, "callee_leg": {"uri": "", "route": [], "dest": "", "party": "", "cseq": 0, "call_id": ""}, "upstream_routes": 0, "relayed_routes": 0, "bye_pending": false, "ack_due": 0.0, "session_expires": 0, "refresher": "", "expires_at": 0.0, "ended_by": ""}',1.796658166114938736e+09);
CREATE TABLE location (
                aor TEXT NOT NULL,
                contact TEXT NOT NULL,
                expires_at REAL NOT NULL,
                q REAL NOT NULL DEFAULT 1.0,
                call_id TEXT NOT NULL DEFAULT '',
                cseq INTEGER NOT NULL DEFAULT 0,
                received TEXT NOT NULL DEFAULT '',
                path TEXT NOT NULL DEFAULT '[]',
                instance TEXT NOT NULL DEFAULT '',
                reg_id INTEGER NOT NULL DEFAULT 0,
                flow TEXT NOT NULL DEFAULT '',
                user_agent TEXT NOT NULL DEFAULT '',
                socket TEXT NOT NULL DEFAULT '',
                seq INTEGER NOT NULL,
                PRIMARY KEY (aor, contact)
            );
INSERT INTO "location" VALUES('sip:alice@example.com','sip:alice@192.0.2.1:5060;ob',1900003600.0,0.7,'c1@h',7,'sip:203.0.113.1:5070','["<sip:edge.example.net;lr>"]','<urn:uuid:1>',1,'udp~127.0.0.1~5060~203.0.113.1~5070~0','Zoiper é','udp:127.0.0.1:5060',1);
INSERT INTO "location" VALUES('sip:alice@example.com','sip:alice@192.0.2.2',1900000060.0,1.0,X'54E96CE970686F6E654068',0,'','[]','',0,'',X'54E96CE970686F6E65','',2);
INSERT INTO "location" VALUES('sip:bob@example.com','sip:bob@192.0.2.5',1900000120.0,1.0,'',0,'','[]','',0,'','','',3);
CREATE TABLE nat_keepalive (
    token TEXT PRIMARY KEY,
    registered_until REAL NOT NULL DEFAULT 0,
    subscriptions TEXT NOT NULL DEFAULT '{}',
    dialogs TEXT NOT NULL DEFAULT '{}',
    updated_at REAL NOT NULL
);
INSERT INTO "nat_keepalive" VALUES('udp~127.0.0.1~5060~203.0.113.1~5070~0',1900003600.0,'{"sub1": 1900000600.0}','{"dlg1": 1900000060.0}',1.79665816611618399615e+09);
CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL);
INSERT INTO "schema_version" VALUES(1,1.79665816611045551292e+09);
CREATE TABLE subscriber (
                username TEXT NOT NULL,
                domain TEXT NOT NULL,
                ha1_md5 TEXT NOT NULL,
                ha1_sha256 TEXT NOT NULL,
                created_at REAL NOT NULL,
                PRIMARY KEY (username, domain)
            );
INSERT INTO "subscriber" VALUES('alice','example.com','04419cbe329312fd8a0c7e274d64948a','62e944735698e521d7fc10067eb1d981a7f1d92d49e22a5ac5fb8df0a152a214',1.79665816611255383487e+09);
INSERT INTO "subscriber" VALUES('bob','example.com','368b557a8be76f21b6241ab9ba9201e2','dd0e395263755a66bc161dd47b811fe569f475342103e981e9b2407d9c65b186',1.79665816611275434497e+09);
CREATE TABLE turn_users (
    username   TEXT NOT NULL,
    realm      TEXT NOT NULL,
    key_md5    BLOB NOT NULL,
    key_sha256 BLOB NOT NULL,
    userhash   BLOB NOT NULL,
    PRIMARY KEY (username, realm)
);
INSERT INTO "turn_users" VALUES('turnuser','example.com',X'B115280C77435AC4E7E024B2552F4C48',X'9A23AFB65589280A682E89D4E24190381038488BCB3382F235D336A74E4DDAD7',X'B435A1B18D6A87C8429EAD6616C9416962174F19AEE28BF525C99CF5771958A6');
CREATE INDEX location_expires ON location (expires_at);
CREATE INDEX cdr_start ON cdr (start);
CREATE INDEX cdr_call ON cdr (call_id);
CREATE INDEX turn_users_userhash ON turn_users (userhash);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('cdr',1);
COMMIT;

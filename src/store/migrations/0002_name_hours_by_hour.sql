-- name_hours keyed hour first: new sightings land in one small region of the
-- index (the current hour) instead of all over it, which keeps the writer
-- fast, and a name search probes each hour of its range with one seek.
CREATE TABLE name_hours_by_hour (
    hour   INTEGER NOT NULL,
    rname  TEXT NOT NULL,
    PRIMARY KEY (hour, rname)
) WITHOUT ROWID;
INSERT INTO name_hours_by_hour (hour, rname) SELECT hour, rname FROM name_hours;
DROP TABLE name_hours;
ALTER TABLE name_hours_by_hour RENAME TO name_hours;

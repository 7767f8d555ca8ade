-- The resolver rewrites golden records and identities' last_seen in place all day: leave room in each page
-- so those updates stay on the page (HOT) and touch no index.
ALTER TABLE profiles SET (fillfactor = 80);
ALTER TABLE identities SET (fillfactor = 90);

/ u.q: subscription bookkeeping and publishing for tick.q, in kdb+tick's conventions.
/ .u.t  table names          .u.w  table -> list of (handle; syms); ` as syms means every sym

\d .u
init:{t::tables`.; w::t!(count t)#enlist()}

/ forget handle h as a subscriber of table tn
unsub:{[tn;h] w[tn]:w[tn] where not h=first each w tn}

/ a closed connection is no longer anyone's subscriber
.z.pc:{[h] unsub[;h] each t}

/ the rows of x (a table) that subscriber syms s asked for
rows:{[x;s] $[s~`; x; select from x where sym in s]}

/ publish table data x of table tn to each of its subscribers, filtered by their syms
pub:{[tn;x] {[tn;x;sub] if[count r:rows[x;last sub]; (neg first sub)(`upd;tn;r)]}[tn;x] each w tn}

/ subscribe the calling handle to table tn (` for all) for syms s (` for all);
/ answers (table name; empty schema), as r.q expects
sub:{[tn;s]
  if[tn~`; :sub[;s] each t];
  if[not tn in t; 'tn];
  unsub[tn;.z.w];
  w[tn],:enlist(.z.w;s);
  (tn; 0#value tn)}

/ tell every subscriber the day has ended
end:{[dt] (neg distinct raze (first each) each value w) @\: (`.u.end;dt)}
\d .

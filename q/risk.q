/ risk.q: the pre-trade checks in q, for q-native consumers; the twin of py/pretrade/risk/checks.py.
/ Same rules, same order, same reason codes and texts; tests/golden/checks.json pins both
/ (tests/test_risk_q.py runs `q q/risk.q -golden tests/golden/checks.json` where a licensed q exists).
/
/ .risk.check[order;limit;ctx;cfg] -> `ok`code`text`limit`value!(...)
/   order: `sym`side`qty`price`strategy`account`kind (price 0n: market order; kind `new`replace`cancel)
/   limit: a row of the limits table (`sym`strategy`tier`state`halt`maxQty`maxNotional`bandBps
/          `passiveBandBps`maxPosition`maxRate`model)
/   ctx:   `refPrice`position`sessionRate`strategyRate`duplicate`fatFingerP`fatFingerModel
/   cfg:   `fatFingerThreshold`maxSessionRate`duplicateWindowMs`capital`maxConcentration`restricted
/ Symbols or strings are accepted wherever a name is expected.

\d .risk

str:{$[-11h=type x;string x;-10h=type x;enlist x;10h=type x;x;""]}   / name as a string
sy:{$[11h=abs type x;x;`$str x]}                                       / name as a symbol
n:{$[x=floor x;string `long$floor x;string x]}                          / 200 not 200f; 101.5
mdl:{[l] $[count m:str l`model;m;"none"]}
ctxt:{[l] "tier ",str[l`tier],", model ",mdl l}
res:{[ok;code;text;lim;v] `ok`code`text`limit`value!(ok;code;text;`float$lim;`float$v)}
deny:{[code;v;lim;l;detail]
  res[0b;code;string[code],": ",n[v]," > ",n[lim]," (",$[count detail;detail,"; ";""],ctxt[l],")";lim;v]}
PASS:res[1b;`PASS;"";0n;0n]

check:{[o;l;c;cfg]
  if[`cancel=sy o`kind;:PASS];
  qty:o`qty; px:o`price; side:sy o`side; buy:side=`buy; mkt:null px;
  valid:(side in `buy`sell) and (qty>0) and not (not mkt) and (px<=0) or px=0w;
  if[not valid;
    :res[0b;`INVALID_ORDER;"INVALID_ORDER: side ",string[side],", qty ",n[qty],", price ",string[px],
      " (side must be buy or sell, qty and price positive)";0n;0n]];
  pos:c`position; np:$[buy;pos+qty;pos-qty];
  red:(pos<>0) and (abs[np]<abs pos) and 0<=np*pos;
  st:sy l`state;
  if[st=`HALTED;
    :res[0b;`TRADING_HALTED;"TRADING_HALTED: ",str[l`sym]," is HALTED (",$[count h:str l`halt;h," halt";"halted"],
      "; tier ",str[l`tier],", model ",mdl[l],"); only cancels pass";0n;0n]];
  if[(st=`REDUCING) and not red;
    :res[0b;`REDUCING_ONLY;"REDUCING_ONLY: ",string[side]," ",n[qty]," takes position ",n[pos]," to ",n[np],
      "; only orders that reduce the position pass (",ctxt[l],")";0;abs np]];
  if[qty>l`maxQty;:deny[`MAX_ORDER_QTY;qty;l`maxQty;l;""]];
  ref:c`refPrice;
  if[not ref>0;
    :res[0b;`NO_REFERENCE_PRICE;"NO_REFERENCE_PRICE: no reference price for ",str[o`sym],
      "; orders wait for market data";0n;0n]];
  p:$[mkt;ref;px]; nt:qty*p;
  if[nt>l`maxNotional;:deny[`MAX_NOTIONAL;nt;l`maxNotional;l;""]];
  if[not mkt;
    pas:$[buy;px<=ref;px>=ref];
    band:$[pas;l`passiveBandBps;l`bandBps];
    dv:1e4*abs[px-ref]%ref;
    if[dv>band;
      :deny[`PRICE_BAND;(floor 0.5+100*dv)%100;band;l;
        $[pas;"passive";"aggressive"]," ",string[side]," at ",n[px]," vs reference ",n[ref],", bps"]]];
  pf:c`fatFingerP;
  if[not null pf;
    if[pf>cfg`fatFingerThreshold;
      :res[0b;`FAT_FINGER;"FAT_FINGER: p ",.Q.f[3;pf]," > ",n[cfg`fatFingerThreshold]," (model ",
        $[count m:str c`fatFingerModel;m;"fatfinger"],")";cfg`fatFingerThreshold;pf]]];
  if[not red;
    if[abs[np]>l`maxPosition;
      :deny[`MAX_POSITION;abs np;l`maxPosition;l;"position ",n[pos]," -> ",n[np]," after a full fill"]];
    conc:(abs[np]*p)%cfg`capital;
    if[conc>cfg`maxConcentration;
      :deny[`CONCENTRATION;(floor 0.5+1e6*conc)%1e6;cfg`maxConcentration;l;
        "position notional / capital after a full fill"]]];
  if[cfg[`maxSessionRate]<1+c`sessionRate;
    :deny[`ORDER_RATE_SESSION;1+c`sessionRate;cfg`maxSessionRate;l;"orders per second, this session"]];
  if[l[`maxRate]<1+c`strategyRate;
    :deny[`ORDER_RATE_STRATEGY;1+c`strategyRate;l`maxRate;l;
      "orders per second, strategy ",$[count s:str o`strategy;s;"-"]]];
  if[c`duplicate;
    :res[0b;`DUPLICATE_ORDER;"DUPLICATE_ORDER: ",$[count a:str o`account;a;"-"]," ",str[o`sym]," ",
      string[side]," ",n[qty]," @ ",$[mkt;"market";n px]," again within ",n[cfg`duplicateWindowMs]," ms";0n;0n]];
  if[(sy o`sym) in sy each cfg`restricted;
    :res[0b;`RESTRICTED;"RESTRICTED: ",str[o`sym]," is on the restricted list";0n;0n]];
  PASS}

/ The golden cases file (JSON, snake_case names) -> one `name`code`text dict per case.
golden:{[path]
  g:.j.k raze read0 hsym `$path;
  gc:g`config;
  cfg:`fatFingerThreshold`maxSessionRate`duplicateWindowMs`capital`maxConcentration`restricted!
    gc`fat_finger_threshold`max_session_rate`duplicate_window_ms`capital`max_concentration`restricted;
  tolim:{`sym`strategy`tier`state`halt`maxQty`maxNotional`bandBps`passiveBandBps`maxPosition`maxRate`model!
    x`sym`strategy`tier`state`halt`max_qty`max_notional`band_bps`passive_band_bps`max_position`max_rate`model};
  toctx:{`refPrice`position`sessionRate`strategyRate`duplicate`fatFingerP`fatFingerModel!
    (x`ref_price;x`position;x`session_rate;x`strategy_rate;x`duplicate;x`fat_finger_p;"")};
  opt:{[cs;k] $[k in key cs;cs k;()!()]};
  one:{[g;cfg;tolim;toctx;opt;cs]
    o:(`sym`side`qty`price`strategy`account`kind!("";"";0f;0n;"";"";"new")),cs`order;
    l:tolim g[`base_limit],opt[cs;`limit];
    c:toctx g[`base_context],opt[cs;`context];
    r:check[o;l;c;cfg];
    `name`code`text!(cs`name;string r`code;r`text)};
  one[g;cfg;tolim;toctx;opt] each g`cases}

\d .

if[`golden in key o:.Q.opt .z.x; -1 .j.j .risk.golden first o`golden; exit 0]

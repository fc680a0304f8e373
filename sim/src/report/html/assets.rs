//! The page's inline style and script. The charts are drawn in Rust as SVG, so the page
//! reads without the script; the script only adds what needs a reader: the tooltip of
//! every series' value under the cursor, the log/linear switch and the step selector.
//!
//! The script marks the page when it ran (`<body data-js="ready">`) and records any
//! error (`<html data-js-error>`), so that a headless browser's DOM tells whether it
//! worked. Opened as `report.html#hover`, it shows every visible chart's tooltip at 60 %
//! of its width, for tests and screenshots that cannot move a mouse.

/// Inline CSS of the page.
pub(super) const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}\
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px}\
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}\
.pass{color:#167516;font-weight:bold}.fail{color:#b00;font-weight:bold}.muted{color:#777}\
.chart{position:relative;margin:0 0 18px}.chart h3{margin:14px 0 4px}\
svg.plot{display:block;width:100%;height:auto;background:#fff;border:1px solid #ddd}\
svg text{font:11px system-ui,sans-serif;fill:#333}.grid{stroke:#eee}.axis{stroke:#555}\
.fault{stroke:#c00;stroke-dasharray:4 3}.fault-span{fill:#c00;fill-opacity:.08}.fault-failed{stroke:#999;stroke-dasharray:2 4}\
.gap{fill:#f0a000;fill-opacity:.25}svg text.gap-label{fill:#a06000}.band{fill-opacity:.12}\
.cursor{stroke:#888;stroke-dasharray:2 2}\
.legend{margin:2px 0 4px;line-height:1.6}.legend span{display:inline-block;margin-right:14px;white-space:nowrap}\
.legend i{display:inline-block;width:14px;height:4px;margin-right:5px;vertical-align:middle}\
.legend i.fault-key{height:0;border-top:2px dashed #c00}.legend i.gap-key{height:10px;background:#f0a000;opacity:.4}\
label.scale{float:right;font-size:12px;margin-top:-22px}\
.tip{position:absolute;z-index:2;background:rgba(255,255,255,.96);border:1px solid #999;border-radius:3px;\
padding:4px 8px;font-size:12px;pointer-events:none;box-shadow:0 1px 4px rgba(0,0,0,.2);white-space:nowrap}\
.tip b{display:block;margin-bottom:2px}.tip i{display:inline-block;width:10px;height:3px;margin-right:4px;vertical-align:middle}\
.tip td{border:0;padding:0 4px}.tip td.n{text-align:right}\
.selector{margin:8px 0;font-size:15px}select{font-size:15px}\
pre{background:#f7f7f7;padding:8px;overflow:auto}[hidden]{display:none!important}";

/// Catches errors of the main script, from the page's head.
pub(super) const ERROR_CATCHER: &str = "window.addEventListener('error',function(e){\
document.documentElement.setAttribute('data-js-error',String(e.message||e));});";

/// The main script, at the end of the body.
pub(super) const SCRIPT: &str = r#"(function(){
'use strict';
function nearest(xs, x){
  var lo=0, hi=xs.length-1;
  if(hi<0) return -1;
  while(hi-lo>1){ var mid=(lo+hi)>>1; if(xs[mid]<x) lo=mid; else hi=mid; }
  return Math.abs(xs[lo]-x)<=Math.abs(xs[hi]-x)?lo:hi;
}
function cell(row, text, cls){ var td=document.createElement('td'); td.textContent=text; if(cls) td.className=cls; row.appendChild(td); return td; }
function setup(svg){
  var chart=svg.closest('.chart'), tip=chart.querySelector('.tip'), cursor=svg.querySelector('.cursor');
  var unit=svg.getAttribute('data-unit')||'', reach=parseFloat(svg.getAttribute('data-reach'))||12;
  var time=svg.getAttribute('data-x')==='time';
  var series=Array.prototype.map.call(svg.querySelectorAll('polyline[data-series]'), function(line){
    var px=line.getAttribute('points').trim().split(/\s+/).map(function(p){return parseFloat(p.split(',')[0]);});
    return {name:line.getAttribute('data-series'), colour:line.getAttribute('stroke'), px:px,
      xs:line.getAttribute('data-xs').split(' '), ys:line.getAttribute('data-ys').split(' ')};
  });
  function hide(){ tip.hidden=true; cursor.setAttribute('visibility','hidden'); }
  function show(ux){
    var rows=[], xval=null, best=Infinity;
    series.forEach(function(s){
      var i=nearest(s.px, ux); if(i<0) return;
      var d=Math.abs(s.px[i]-ux); if(d>reach) return;
      rows.push([s, s.ys[i]]);
      if(d<best){ best=d; xval=s.xs[i]; }
    });
    if(!rows.length){ hide(); return false; }
    tip.textContent='';
    var head=document.createElement('b');
    head.textContent=time ? 't = '+Math.floor(parseFloat(xval))+' s' : 'p'+xval;
    tip.appendChild(head);
    var table=document.createElement('table');
    rows.forEach(function(r){
      var row=document.createElement('tr'), key=document.createElement('i');
      key.style.background=r[0].colour;
      cell(row,'').appendChild(key);
      cell(row, r[0].name); cell(row, r[1]+' '+unit, 'n');
      table.appendChild(row);
    });
    tip.appendChild(table);
    cursor.setAttribute('x1',ux); cursor.setAttribute('x2',ux); cursor.setAttribute('visibility','visible');
    tip.hidden=false;
    var box=svg.getBoundingClientRect(), outer=chart.getBoundingClientRect();
    var vb=svg.viewBox.baseVal, left=box.left-outer.left+(ux/vb.width)*box.width;
    var right=left+12+tip.offsetWidth>outer.width;
    tip.style.left=(right?left-12-tip.offsetWidth:left+12)+'px';
    tip.style.top=(box.top-outer.top+8)+'px';
    tip.setAttribute('data-rows', rows.length);
    return true;
  }
  svg.addEventListener('mousemove', function(e){
    var pt=svg.createSVGPoint(); pt.x=e.clientX; pt.y=e.clientY;
    show(pt.matrixTransform(svg.getScreenCTM().inverse()).x);
  });
  svg.addEventListener('mouseleave', hide);
}
document.querySelectorAll('svg.plot').forEach(setup);
document.querySelectorAll('input[data-log-toggle]').forEach(function(box){
  box.addEventListener('change', function(){
    box.closest('.chart').querySelectorAll('svg.plot').forEach(function(svg){
      svg.hidden=(svg.getAttribute('data-scale')==='log')!==box.checked;
    });
    box.closest('.chart').querySelector('.tip').hidden=true;
  });
});
var select=document.getElementById('step-select');
function choose(){
  document.querySelectorAll('.step-detail').forEach(function(d){ d.hidden=d.getAttribute('data-step')!==select.value; });
}
if(select){ select.addEventListener('change', choose); choose(); }
if(location.hash==='#hover'){
  var shown=0;
  document.querySelectorAll('svg.plot').forEach(function(svg){
    var box=svg.getBoundingClientRect(); if(!box.width) return;
    svg.dispatchEvent(new MouseEvent('mousemove',{clientX:box.left+box.width*0.6, clientY:box.top+box.height/2, bubbles:true}));
    if(!svg.closest('.chart').querySelector('.tip').hidden) shown++;
  });
  document.body.setAttribute('data-hover', shown);
}
document.body.setAttribute('data-js','ready');
})();"#;

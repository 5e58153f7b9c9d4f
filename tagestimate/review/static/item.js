// An item page's filters, sorting and Grad-CAM overlays. Data come from data-* attributes
// (HTML-escaped JSON) and are only ever set as text or attribute values, never as HTML.
(function(){
var th=JSON.parse(document.body.dataset.thresholds||'{}'),B=parseFloat(document.body.dataset.border||'0.1');
var g=document.querySelector('.gallery');if(!g)return;
var cards=Array.prototype.slice.call(g.querySelectorAll('.card'));
cards.forEach(function(c,i){c._i=i;c._p=JSON.parse(c.dataset.p||'{}');c._t=JSON.parse(c.dataset.t||'[]');
 c._note=c.querySelector('.camnote');var im=c.querySelector('img');if(im){c._img=im;c._src=im.getAttribute('src');}});
var $=function(id){return document.getElementById(id);};
function near(p,l){return (l in p)&&(l in th)&&Math.abs(p[l]-th[l])<=B;}
function value(c,tag){var p=c._p;if(tag&&tag!=='-none-')return (tag in p)?p[tag]:0;
 var m=0;(c._t.length?c._t:Object.keys(p)).forEach(function(l){if(p[l]>m)m=p[l];});return m;}
function apply(){var tag=$('tag').value,lo=parseFloat($('lo').value)||0,hi=parseFloat($('hi').value);
 if(isNaN(hi))hi=1;var bord=$('border').checked,sort=$('sort').value,shown=0;
 cards.forEach(function(c){var p=c._p,ok;
  if(tag==='-none-')ok=c._t.length===0;else if(tag)ok=bord?near(p,tag):c._t.indexOf(tag)>=0;else ok=true;
  if(bord&&!(tag&&tag!=='-none-'))ok=ok&&Object.keys(p).some(function(l){return near(p,l);});
  var v=value(c,tag);c._v=v;if(v<lo-1e-9||v>hi+1e-9)ok=false;
  c.classList.toggle('hidden',!ok);c.classList.toggle('border',Object.keys(p).some(function(l){return near(p,l);}));
  if(ok)shown++;});
 var order=cards.slice();if(sort!=='page')order.sort(function(a,b){return sort==='desc'?b._v-a._v:a._v-b._v;});
 order.forEach(function(c){g.appendChild(c);});$('count').textContent=shown+' of '+cards.length+' images shown';}
// Show chip t's overlay on card c (t null: the thumbnail) and say whose map it is.
function show(c,t){if(c._img)c._img.setAttribute('src',t?t.dataset.cam:c._src);
 if(c._note)c._note.textContent=t?'Grad-CAM of '+t.dataset.tag+(t.dataset.flat?': flat map, no region stands out':''):'';}
function cams(on){cards.forEach(function(c){show(c,on?c.querySelector('.tag.cam'):null);});}
g.addEventListener('mouseover',function(e){var t=e.target.closest('.tag.cam');if(!t)return;show(t.closest('.card'),t);});
g.addEventListener('mouseout',function(e){var t=e.target.closest('.tag.cam');if(!t)return;var c=t.closest('.card');
 var cb=$('cams');show(c,c.querySelector('.tag.pinned')||(cb&&cb.checked?c.querySelector('.tag.cam'):null));});
g.addEventListener('click',function(e){var t=e.target.closest('.tag.cam');if(!t)return;var c=t.closest('.card');
 var was=t.classList.contains('pinned');c.querySelectorAll('.tag.pinned').forEach(function(x){x.classList.remove('pinned');});
 if(!was)t.classList.add('pinned');show(c,was?null:t);});
['tag','lo','hi','border','sort'].forEach(function(id){$(id).addEventListener('input',apply);$(id).addEventListener('change',apply);});
var cb=$('cams');if(cb)cb.addEventListener('change',function(){cams(cb.checked);});
// #tag=NAME&border=1 (each value percent-encoded, so a label may hold '&' or '=').
location.hash.slice(1).split('&').forEach(function(kv){var at=kv.indexOf('=');if(at<0)return;
 var k=kv.slice(0,at),v=decodeURIComponent(kv.slice(at+1));
 if(k==='tag'){var s=$('tag');for(var i=0;i<s.options.length;i++)if(s.options[i].value===v)s.value=v;}
 if(k==='border')$('border').checked=v==='1';});
apply();})();

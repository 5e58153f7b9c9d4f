// Review in the browser: confirm or reject each tag of a card, add a missing one, export the
// decisions as corrections.csv (tagestimate/corrections.py). The page works from disk, so the
// decisions live in the browser's localStorage, one entry per (image, tag), under one prefix per
// report (the folder of the page), so that an export from any page of a report holds them all.
// Markup contract (item pages; the training report's suspect labels use the same):
//   an element class="review-card" data-review-image="/abs/image.jpg" data-review-item="item or ''"
//   holding one element data-review-tag="label" per tag shown (optional: data-review-suggest="label"
//   on a label to offer first when adding); once per page
//   a script element of type application/json, id review-labels, holding ["every", "label"].
// Names are hostile text: they are only ever set as textContent or attribute values, never as HTML.
(function(){
'use strict';
if(!document.querySelector('.review-card'))return;
var HEADER=['image','item','tag','decision','reviewer','time'];
var ROOT='tagestimate-review',REPORT=document.body.dataset.reviewReport||location.pathname.replace(/[^\/]*$/,'');
var PREFIX=ROOT+'|'+REPORT+'|',NAME_KEY=ROOT+'|reviewer';
var LABELS=[];
try{var el=document.getElementById('review-labels');LABELS=el?JSON.parse(el.textContent):[];}catch(e){LABELS=[];}
var store=null,memory={},problem='';
try{store=window.localStorage;store.getItem(NAME_KEY);}catch(e){store=null;problem='browser storage unavailable: decisions last until this page closes';}
function sget(k){return store?store.getItem(k):(k in memory?memory[k]:null);}
function sset(k,v){try{if(store)store.setItem(k,v);else memory[k]=v;}catch(e){problem='could not save ('+e.name+'): export now, this page forgets it on reload';}}
function sdel(k){if(store)store.removeItem(k);else delete memory[k];}
function skeys(){if(!store)return Object.keys(memory);var out=[];for(var i=0;i<store.length;i++)out.push(store.key(i));return out;}

// ---------------------------------------------------------------- decisions
function keyOf(image,tag){return PREFIX+JSON.stringify([image,tag]);}
function now(){return new Date().toISOString().replace(/\.\d+Z$/,'Z');}
function reviewer(){return sget(NAME_KEY)||'';}
// every decision of this report: [{image, tag, item, decision, reviewer, time}]
function decisions(){var out=[];
 skeys().forEach(function(k){if(k.indexOf(PREFIX)!==0)return;
  try{var it=JSON.parse(k.slice(PREFIX.length)),v=JSON.parse(sget(k));
   out.push({image:it[0],tag:it[1],item:v.item,decision:v.decision,reviewer:v.reviewer||'',time:v.time});}catch(e){}});
 return out;}
// {image: {tag: decision}}, read from storage once (again after Clear or a change in another tab):
// a decision then redraws only its image's cards, fast on a page of 2,000 cards
var cache=null,total=0;
function byImage(){if(!cache){cache={};total=0;
  decisions().forEach(function(d){(cache[d.image]=cache[d.image]||{})[d.tag]=d;total++;});}return cache;}
function decide(card,tag,decision){var image=card.dataset.reviewImage,k=keyOf(image,tag),map=byImage(),mine=map[image]||{};
 if(mine[tag])total--;delete mine[tag];
 if(!decision)sdel(k);
 else{var d={image:image,tag:tag,item:card.dataset.reviewItem||'',decision:decision,reviewer:reviewer(),time:now()};
  sset(k,JSON.stringify({item:d.item,decision:decision,reviewer:d.reviewer,time:d.time}));mine[tag]=d;total++;}
 map[image]=mine;(index[image]||[card]).forEach(function(c){render(c,mine);});summary();}

// ---------------------------------------------------------------- the cards
function allCards(){return [].slice.call(document.querySelectorAll('.review-card'));}
function shown(card){return card.offsetParent!==null||getComputedStyle(card).position==='fixed';}
function tagsOf(card){return [].slice.call(card.querySelectorAll('[data-review-tag],[data-review-added]'));}
function nameOf(chip){return chip.hasAttribute('data-review-tag')?chip.getAttribute('data-review-tag'):chip.getAttribute('data-review-added');}
function button(text,title,cls){var b=document.createElement('button');b.type='button';b.className=cls;
 b.textContent=text;b.title=title;b.setAttribute('aria-label',title);b.tabIndex=-1;return b;}
function extraOf(card){var x=card.querySelector('.review-extra');if(x)return x;
 x=document.createElement('span');x.className='review-extra';
 var add=button('+ tag','add a missing tag (key +)','review-addbtn');x.appendChild(add);
 var note=card.querySelector('.camnote');(note?note.parentNode:card).insertBefore(x,note||null);return x;}
// a tag and its buttons as one row: tag on the left, buttons at the right edge of the card
function pair(chip,buttons){var row=document.createElement('span');row.className='review-pair';
 var g=document.createElement('span');g.className='review-btns';buttons.forEach(function(b){g.appendChild(b);});
 if(chip.parentNode)chip.parentNode.insertBefore(row,chip);row.appendChild(chip);row.appendChild(g);return row;}
function setup(card){if(card._review)return;card._review=true;card.tabIndex=-1;
 card.querySelectorAll('[data-review-tag]').forEach(function(chip){var tag=chip.getAttribute('data-review-tag');
  chip.tabIndex=0;pair(chip,[button('\u2713','confirm '+tag+' (key a)','review-yes'),
   button('\u2717','reject '+tag+' (key r)','review-no')]);});
 extraOf(card);}
function render(card,mine){mine=mine||{};
 tagsOf(card).forEach(function(chip){if(!chip.hasAttribute('data-review-tag'))return;var d=mine[nameOf(chip)],
  v=d?(d.decision==='add'?'confirm':d.decision):'';
  chip.classList.toggle('review-confirm',v==='confirm');chip.classList.toggle('review-reject',v==='reject');
  var g=chip.nextSibling;if(g&&g.className==='review-btns'){g.firstChild.setAttribute('aria-pressed',v==='confirm');
   g.lastChild.setAttribute('aria-pressed',v==='reject');}});
 var x=extraOf(card),onCard={};
 card.querySelectorAll('[data-review-tag]').forEach(function(c){onCard[c.getAttribute('data-review-tag')]=1;});
 var had={};x.querySelectorAll('[data-review-added]').forEach(function(c){had[c.getAttribute('data-review-added')]=c;});
 Object.keys(mine).forEach(function(tag){if(mine[tag].decision!=='add'||onCard[tag])return;
  if(had[tag]){delete had[tag];return;}
  var c=document.createElement('span');c.className='tag review-added';c.setAttribute('data-review-added',tag);
  c.tabIndex=0;c.title='added by you: '+tag+' (r or u removes it)';var b=document.createElement('bdi');
  b.textContent=tag;c.appendChild(b);
  x.insertBefore(pair(c,[button('\u2717','remove the added tag '+tag+' (key r)','review-no')]),x.querySelector('.review-addbtn'));});
 Object.keys(had).forEach(function(tag){var c=had[tag];if(c===cur.tag)cur.tag=null;
  var row=c.parentNode;row.parentNode.removeChild(row);});}

// ---------------------------------------------------------------- the bar
var bar=document.createElement('div');bar.id='review-bar';bar.setAttribute('role','region');bar.setAttribute('aria-label','review');
function part(tag,text,attrs){var e=document.createElement(tag);if(text)e.textContent=text;
 Object.keys(attrs||{}).forEach(function(a){e.setAttribute(a,attrs[a]);});bar.appendChild(e);return e;}
part('strong','Review');var counts=part('span','',{id:'review-counts'});
var who=part('label','your name ');var nameBox=document.createElement('input');nameBox.id='review-reviewer';
nameBox.placeholder='reviewer';nameBox.size=14;nameBox.value=reviewer();who.appendChild(nameBox);
var exportBtn=part('button','Export corrections.csv',{id:'review-export',type:'button'});
var clearBtn=part('button','Clear',{id:'review-clear',type:'button'});
part('span','keys: j/k card \u00b7 h/l tag \u00b7 a/y confirm \u00b7 r/n reject \u00b7 u undo \u00b7 + add',{'class':'review-keys'});
var status=part('span','',{id:'review-status'});
document.body.appendChild(bar);document.body.classList.add('review-on');
nameBox.addEventListener('input',function(){sset(NAME_KEY,nameBox.value.trim());nameBox.classList.toggle('review-ask',!nameBox.value.trim());});
nameBox.classList.toggle('review-ask',!nameBox.value.trim());
var index={};  // image -> its cards on this page
function refresh(){cache=null;var map=byImage(),cards=allCards();index={};
 // the cards' containers leave the page while thousands of buttons go in: one style pass, not one per button
 var out=[];cards.forEach(function(c){var box=c.parentNode;if(box&&box!==document.body&&out.indexOf(box)<0&&!box.contains(document.activeElement))out.push(box);});
 var back=out.map(function(box){var at=document.createComment('');box.parentNode.replaceChild(at,box);return [at,box];});
 cards.forEach(function(card){setup(card);var image=card.dataset.reviewImage;(index[image]=index[image]||[]).push(card);
  render(card,map[image]);});
 back.forEach(function(p){p[0].parentNode.replaceChild(p[1],p[0]);});
 summary();}
function summary(){var map=byImage(),n={confirm:0,reject:0,add:0};
 Object.keys(index).forEach(function(image){var mine=map[image]||{};
  Object.keys(mine).forEach(function(t){n[mine[t].decision]=(n[mine[t].decision]||0)+1;});});
 counts.textContent=' this page: '+n.confirm+' confirmed \u00b7 '+n.reject+' rejected \u00b7 '+n.add+' added ('+total+
  ' decision'+(total===1?'':'s')+' in this report) ';
 exportBtn.disabled=clearBtn.disabled=total===0;status.textContent=problem;
 if(cur.card)mark(cur.card,cur.tag);}
function cell(v){v=v==null?'':String(v);return /[",\r\n]|^\s|\s$/.test(v)?'"'+v.replace(/"/g,'""')+'"':v;}
function csv(){var name=reviewer(),map=byImage(),rows=[];  // the cache: it holds a decision storage refused too
 Object.keys(map).forEach(function(i){Object.keys(map[i]).forEach(function(t){rows.push(map[i][t]);});});
 rows.sort(function(a,b){
  return a.image<b.image?-1:a.image>b.image?1:a.tag<b.tag?-1:a.tag>b.tag?1:0;});
 // decisions made before the name was typed are this browser's reviewer's too
 return [HEADER.join(',')].concat(rows.map(function(d){return [d.image,d.item,d.tag,d.decision,d.reviewer||name,d.time]
  .map(cell).join(',');})).join('\n')+'\n';}
exportBtn.addEventListener('click',function(){var text=csv(),a=document.createElement('a');
 a.href=URL.createObjectURL(new Blob([text],{type:'text/csv;charset=utf-8'}));a.download='corrections.csv';
 document.body.appendChild(a);a.click();a.parentNode.removeChild(a);setTimeout(function(){URL.revokeObjectURL(a.href);},5000);
 status.textContent='exported '+(text.split('\n').length-2)+' rows as corrections.csv (to your downloads folder)';});
clearBtn.addEventListener('click',function(){var all=decisions();
 if(!all.length||!window.confirm('Forget all '+all.length+' decisions of this report (every page)? Export them first to keep them.'))return;
 all.forEach(function(d){sdel(keyOf(d.image,d.tag));});refresh();status.textContent='cleared';});

// ---------------------------------------------------------------- focus and keys
var cur={card:null,tag:null};
function mark(card,tag){document.querySelectorAll('.review-current').forEach(function(e){e.classList.remove('review-current');});
 cur.card=card;cur.tag=tag&&card.contains(tag)?tag:null;if(!card)return;card.classList.add('review-current');
 if(cur.tag)cur.tag.classList.add('review-current');}
function select(card,tag){if(!card)return;mark(card,tag);var target=cur.tag||card;
 if(document.activeElement!==target)target.focus({preventScroll:true});
 card.scrollIntoView({block:'nearest'});}
function step(by){var list=allCards().filter(shown);if(!list.length)return;var at=list.indexOf(cur.card);
 var next=list[at<0?(by>0?0:list.length-1):Math.min(list.length-1,Math.max(0,at+by))];select(next,tagsOf(next)[0]);}
function stepTag(by){if(!cur.card)return step(1);var tags=tagsOf(cur.card);if(!tags.length)return;
 var at=tags.indexOf(cur.tag);select(cur.card,tags[Math.min(tags.length-1,Math.max(0,at+by))]);}
function act(decision){var card=cur.card,chip=cur.tag;if(!card||!chip)return;var tag=nameOf(chip);
 if(chip.hasAttribute('data-review-added')){if(decision!=='confirm'){var tags=tagsOf(card),at=tags.indexOf(chip);
  decide(card,tag,null);select(card,tagsOf(card)[Math.max(0,at-1)]||null);}return;}
 decide(card,tag,decision);
 if(decision){var tags=tagsOf(card),i=tags.indexOf(chip);if(i>=0&&i<tags.length-1)select(card,tags[i+1]);}}
document.addEventListener('focusin',function(e){var card=e.target.closest&&e.target.closest('.review-card');
 if(!card||e.target.closest('.review-picker'))return;var chip=e.target.closest('[data-review-tag],[data-review-added]');
 mark(card,chip||(card===cur.card?cur.tag:null));});
document.addEventListener('click',function(e){var b=e.target.closest('button');var card=e.target.closest('.review-card');
 if(!b||!card||b.closest('.review-picker'))return;
 if(b.className==='review-addbtn'){openPicker(card);return;}
 var chip=b.parentNode.className==='review-btns'?b.parentNode.previousSibling:null;
 if(!chip||!chip.getAttribute)return;var tag=nameOf(chip);if(tag==null)return;
 if(chip.hasAttribute('data-review-added')){decide(card,tag,null);select(card,null);return;}
 var want=b.className==='review-yes'?'confirm':'reject',d=(byImage()[card.dataset.reviewImage]||{})[tag];
 select(card,chip);decide(card,tag,d&&d.decision===want?null:want);});  // a second click undoes
document.addEventListener('keydown',function(e){
 if(e.ctrlKey||e.metaKey||e.altKey||e.defaultPrevented)return;var t=e.target;
 // Escape leaves a filter or the name field, so that the review keys work again
 if(e.key==='Escape'&&t&&/^(INPUT|SELECT|TEXTAREA)$/.test(t.tagName)&&!t.closest('.review-picker')){t.blur();
  if(cur.card)select(cur.card,cur.tag);return;}
 if(t&&(t.isContentEditable||/^(INPUT|SELECT|TEXTAREA|BUTTON)$/.test(t.tagName)&&!(t.tagName==='BUTTON'&&e.key.length===1)))return;
 var k=e.key,done=true;
 if(k==='j')step(1);else if(k==='k')step(-1);
 else if(k==='l'||k==='ArrowRight')stepTag(1);else if(k==='h'||k==='ArrowLeft')stepTag(-1);
 else if(k==='a'||k==='y')act('confirm');else if(k==='r'||k==='n')act('reject');
 else if(k==='u'||k==='Backspace'||k==='Delete')act(null);
 else if(k==='+'||k==='=')openPicker(cur.card||(step(1),cur.card));
 else done=false;
 if(done)e.preventDefault();});

// ---------------------------------------------------------------- add a missing tag
var picker=null;
function closePicker(back){if(!picker)return;var card=picker._card;picker.parentNode.removeChild(picker);picker=null;
 if(back)select(card,cur.tag);}
function openPicker(card){if(!card)return;closePicker(false);select(card,cur.card===card?cur.tag:null);
 var present={};tagsOf(card).forEach(function(c){present[nameOf(c)]=1;});
 var first=[].slice.call(card.querySelectorAll('[data-review-suggest]')).map(function(c){return c.getAttribute('data-review-suggest');});
 var choices=first.concat(LABELS).filter(function(l,i,all){return typeof l==='string'&&!present[l]&&all.indexOf(l)===i;});
 picker=document.createElement('div');picker.className='review-picker';picker._card=card;
 var box=document.createElement('input');box.placeholder='add a tag: type, Enter';box.setAttribute('aria-label','add a tag');
 var list=document.createElement('ul');picker.appendChild(box);picker.appendChild(list);var hi=0,items=[];
 function draw(){var q=box.value.toLowerCase();list.textContent='';
  items=choices.filter(function(l){return l.toLowerCase().indexOf(q)>=0;});hi=Math.min(hi,Math.max(0,items.length-1));
  items.forEach(function(l,i){var li=document.createElement('li');li.textContent=l;li.title=l;if(i===hi)li.className='hi';
   li.addEventListener('mousedown',function(ev){ev.preventDefault();pick(l);});list.appendChild(li);});
  if(!items.length){var li=document.createElement('li');li.className='empty';var on=Object.keys(present).filter(function(l){return q&&l.toLowerCase().indexOf(q)>=0;});
   li.textContent=on.length?'already on this card: '+on.join(', '):choices.length?'no label matches':'no label left to add';list.appendChild(li);}}
 function pick(l){closePicker(false);var d=(byImage()[card.dataset.reviewImage]||{})[l];if(!d||d.decision!=='add')decide(card,l,'add');
  var chip=[].slice.call(card.querySelectorAll('[data-review-added]')).filter(function(c){return c.getAttribute('data-review-added')===l;})[0];
  select(card,chip||null);}
 box.addEventListener('input',function(){hi=0;draw();});
 box.addEventListener('keydown',function(e){if(e.key==='ArrowDown'){hi=Math.min(items.length-1,hi+1);draw();}
  else if(e.key==='ArrowUp'){hi=Math.max(0,hi-1);draw();}
  else if(e.key==='Enter'){if(items[hi]!=null)pick(items[hi]);}
  else if(e.key==='Escape'){closePicker(true);}else return;e.preventDefault();e.stopPropagation();});
 box.addEventListener('blur',function(){setTimeout(function(){if(picker&&picker.contains(document.activeElement))return;
  if(picker&&picker._card===card)closePicker(false);},150);});
 extraOf(card).appendChild(picker);draw();box.focus();}

var css='body.review-on{padding-bottom:3.2em}'+
 '#review-bar{position:fixed;left:0;right:0;bottom:0;z-index:5;background:#20303f;color:#fff;font-size:13px;'+
 'padding:6px 1.5em;display:flex;flex-wrap:wrap;gap:.4em 1em;align-items:center}'+
 '#review-bar button{font:inherit;padding:2px 10px}#review-bar input{font:inherit}'+
 '#review-bar input.review-ask{outline:2px solid #ffb347}#review-bar .review-keys{color:#b8c7d6;font-size:12px}'+
 '#review-status{color:#ffd27f}'+
 '.review-card.review-current{outline:3px solid #2a6fdb;outline-offset:1px}'+
 '.review-card{scroll-margin:9em 0 5em}'+  /* j/k: clear of the sticky filters above and the bar below */
 '.review-card [data-review-tag].review-current,.review-card [data-review-added].review-current,'+
 '.review-card [data-review-tag]:focus-visible{outline:2px solid #2a6fdb;outline-offset:1px}'+
 '.review-card [data-review-tag].review-confirm{background:#cdeccf;color:#124d1a}'+
 '.review-card [data-review-tag].review-confirm::before{content:"\\2713\\a0";font-weight:bold}'+
 '.review-card [data-review-tag].review-reject{background:#f9d6d5;color:#8b1a15;text-decoration:line-through}'+
 '.review-card [data-review-tag].review-reject::before{content:"\\2717\\a0";font-weight:bold}'+
 '.tag.review-added{background:#e7f7e8;border:1px dashed #2e8b3a;color:#124d1a}'+
 '.tag.review-added::before{content:"+\\a0";font-weight:bold}'+
 '.review-pair{display:flex;align-items:flex-start;justify-content:space-between;gap:2px}'+
 '.review-pair>.tag{flex:0 1 auto;min-width:0;word-break:normal;overflow-wrap:anywhere}'+
 '.review-btns{flex:none;white-space:nowrap;margin-top:1px}'+
 '.review-btns button,.review-extra button{font-size:11px;line-height:1.2;padding:0 4px;margin:0 0 0 1px;border:1px solid #bbb;'+
 'background:#fff;border-radius:3px;cursor:pointer;color:#444}'+
 '.review-btns .review-yes[aria-pressed=true]{background:#2e8b3a;border-color:#2e8b3a;color:#fff}'+
 '.review-btns .review-no[aria-pressed=true]{background:#c0392b;border-color:#c0392b;color:#fff}'+
 '.review-extra{display:block;margin-top:2px}.review-extra .review-addbtn{color:#2e6b3a}'+
 '.review-picker{position:relative;margin-top:2px}.review-picker input{width:100%;box-sizing:border-box;font-size:12px}'+
 '.review-picker ul{list-style:none;margin:0;padding:0;max-height:12em;overflow:auto;background:#fff;border:1px solid #999;'+
 'position:absolute;left:0;right:0;z-index:4}.review-picker li{padding:1px 4px;cursor:pointer;word-break:break-all}'+
 '.review-picker li.hi{background:#2a6fdb;color:#fff}.review-picker li.empty{color:#888;cursor:default}';
var style=document.createElement('style');style.textContent=css;document.head.appendChild(style);
window.addEventListener('storage',function(e){if(!e.key||e.key.indexOf(ROOT)===0){nameBox.value=reviewer();refresh();}});
refresh();
})();

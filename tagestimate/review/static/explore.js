// A "similar" link or a map click opens an item page at a card (#c-...): bring that card to the
// middle of the window (the sticky filters would hide it at the top); CSS :target outlines it.
(function(){
function show(){var id=decodeURIComponent(location.hash.slice(1));if(id.indexOf('c-')!==0)return;
 var c=document.getElementById(id);if(!c)return;c.classList.remove('hidden');c.scrollIntoView({block:'center'});}
// A neighbour's thumbnail that is missing (its image was not found): show its key instead.
document.addEventListener('error',function(e){var t=e.target;if(!t.closest||!t.closest('.similar'))return;
 var s=document.createElement('span');s.className='nothumb';s.textContent=t.getAttribute('alt')||'?';t.replaceWith(s);},true);
// again after load: the browser's own jump to the anchor comes after this script and would undo it
window.addEventListener('hashchange',show);window.addEventListener('load',function(){setTimeout(show,0);});show();})();

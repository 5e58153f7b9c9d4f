// The map page: every image a point on a canvas, drawn into one ImageData buffer (a few ms for
// 100k points), pan with a drag, zoom with the wheel, a thumbnail on hover, a click opens the item.
// Data come from the JSON in #mapdata; names are only ever set as text or attribute values.
(function(){
var D=JSON.parse(document.getElementById('mapdata').textContent);
var canvas=document.getElementById('map'),ctx=canvas.getContext('2d'),tip=document.getElementById('tip');
var tipimg=document.getElementById('tipimg'),tiptext=document.getElementById('tiptext');
var n=D.x.length,X=new Float32Array(D.x),Y=new Float32Array(D.y);
// Dot radius in pixels: big for a few hundred images, small where 100k must stay apart.
var R=n<=2000?4:n<=20000?2:1,stamp=[];
function rgb(css){var c=document.createElement('canvas').getContext('2d');c.fillStyle=css;c.fillRect(0,0,1,1);
 var p=c.getImageData(0,0,1,1).data;return (255<<24)|(p[2]<<16)|(p[1]<<8)|p[0];}  // ABGR, little-endian
var colours=D.colours.map(rgb),none=rgb(D.none),C=new Uint32Array(n);
for(var i=0;i<n;i++)C[i]=D.t[i]>=0?colours[D.t[i]]:none;
// A grid over [0,1]^2 for finding the point under the mouse: cell -> its points (counting sort).
var G=128,start=new Int32Array(G*G+1),order=new Int32Array(n);
function cell(v){var c=Math.floor(v*G);return c<0?0:c>=G?G-1:c;}
for(i=0;i<n;i++)start[cell(Y[i])*G+cell(X[i])+1]++;
for(i=0;i<G*G;i++)start[i+1]+=start[i];
var fill=start.slice(0,G*G);for(i=0;i<n;i++)order[fill[cell(Y[i])*G+cell(X[i])]++]=i;
var view={s:1,ox:0,oy:0},W=0,H=0,img=null,buf=null,pending=false,hover=-1;
var stats=window.mapStats={points:n,draws:0,lastMs:0,totalMs:0,maxMs:0};
// Fit the points' bounding box to the canvas, one scale for both axes (distances keep their meaning).
var x0=1,x1=0,y0=1,y1=0;for(i=0;i<n;i++){if(X[i]<x0)x0=X[i];if(X[i]>x1)x1=X[i];if(Y[i]<y0)y0=Y[i];if(Y[i]>y1)y1=Y[i];}
if(!n){x0=y0=0;x1=y1=1;}
function fit(){var bw=Math.max(x1-x0,1e-6),bh=Math.max(y1-y0,1e-6),m=0.94*Math.min(W/bw,H/bh);
 view.s=m;view.ox=(W-bw*m)/2-x0*m;view.oy=(H-bh*m)/2-y0*m;}
function resize(){var r=canvas.getBoundingClientRect(),w=Math.max(1,Math.round(r.width)),h=Math.max(1,Math.round(r.height));
 if(w===W&&h===H)return;var first=!W;W=canvas.width=w;H=canvas.height=h;img=ctx.createImageData(W,H);
 buf=new Uint32Array(img.data.buffer);stamp=[];
 for(var dy=-R;dy<=R;dy++)for(var dx=-R;dx<=R;dx++)if(dx*dx+dy*dy<=R*R+R*0.5)stamp.push(dy*W+dx);  // a disc
 if(first)fit();}
function draw(){pending=false;var t0=performance.now();buf.fill(0xffffffff);
 var s=view.s,ox=view.ox,oy=view.oy,w=W,h=H,m=stamp.length;
 for(var i=0;i<n;i++){var px=Math.round(X[i]*s+ox),py=Math.round(Y[i]*s+oy);
  if(px<R||py<R||px>=w-R||py>=h-R)continue;
  var o=py*w+px,c=C[i];for(var j=0;j<m;j++)buf[o+stamp[j]]=c;}
 ctx.putImageData(img,0,0);
 if(hover>=0){ctx.strokeStyle='#000';ctx.lineWidth=2;ctx.beginPath();
  ctx.arc(X[hover]*s+ox,Y[hover]*s+oy,R+5,0,2*Math.PI);ctx.stroke();}
 var ms=performance.now()-t0;stats.draws++;stats.lastMs=ms;stats.totalMs+=ms;if(ms>stats.maxMs)stats.maxMs=ms;}
function redraw(){if(!pending){pending=true;requestAnimationFrame(function(){if(pending)draw();});}}
// The point nearest to canvas pixel (cx, cy) within 8 px, or -1.
function pick(cx,cy){var x=(cx-view.ox)/view.s,y=(cy-view.oy)/view.s,r=8/view.s,best=-1,bd=64;
 var x0=cell(x-r),x1=cell(x+r),y0=cell(y-r),y1=cell(y+r);
 for(var gy=y0;gy<=y1;gy++)for(var gx=x0;gx<=x1;gx++){var c=gy*G+gx;
  for(var j=start[c];j<start[c+1];j++){var i=order[j],dx=(X[i]-x)*view.s,dy=(Y[i]-y)*view.s,d=dx*dx+dy*dy;
   if(d<bd){bd=d;best=i;}}}
 return best;}
function page(i){var it=D.items[D.i[i]],p=D.p[i];return it[1]+(p?'.p'+(p+1):'')+'.html#c-'+D.s[i];}
function thumb(i){return D.h[i]?'thumbs/'+D.items[D.i[i]][1]+'/'+D.s[i]+'.jpg':'';}
function showTip(i,cx,cy){hover=i;redraw();if(i<0){tip.hidden=true;canvas.style.cursor='crosshair';return;}
 canvas.style.cursor='pointer';var src=thumb(i);
 if(src){tipimg.hidden=false;if(tipimg.getAttribute('src')!==src)tipimg.setAttribute('src',src);}else{tipimg.hidden=true;tipimg.removeAttribute('src');}
 tiptext.textContent=D.items[D.i[i]][0]+' / '+D.k[i]+' \u2014 '+(D.t[i]>=0?D.labels[D.t[i]]:'no tag')+(src?'':' (no preview)');
 tip.hidden=false;tip.style.left=Math.min(cx+14,W-190)+'px';tip.style.top=Math.max(0,Math.min(cy+14,H-200))+'px';}
function at(e){var r=canvas.getBoundingClientRect();return [e.clientX-r.left,e.clientY-r.top];}
var drag=null,moved=false;
canvas.addEventListener('mousedown',function(e){drag=at(e);moved=false;});
window.addEventListener('mouseup',function(){drag=null;});
canvas.addEventListener('mousemove',function(e){var p=at(e);
 if(drag){var dx=p[0]-drag[0],dy=p[1]-drag[1];if(Math.abs(dx)+Math.abs(dy)>2)moved=true;
  view.ox+=dx;view.oy+=dy;drag=p;tip.hidden=true;hover=-1;redraw();return;}
 showTip(pick(p[0],p[1]),p[0],p[1]);});
canvas.addEventListener('mouseleave',function(){showTip(-1,0,0);});
canvas.addEventListener('click',function(e){if(moved)return;var p=at(e),i=pick(p[0],p[1]);if(i>=0)location.href=page(i);});
canvas.addEventListener('dblclick',function(){fit();redraw();});
function zoom(f,cx,cy){view.ox=cx-(cx-view.ox)*f;view.oy=cy-(cy-view.oy)*f;view.s*=f;redraw();}
canvas.addEventListener('wheel',function(e){e.preventDefault();var p=at(e);zoom(Math.exp(-e.deltaY*0.0015),p[0],p[1]);
 tip.hidden=true;hover=-1;},{passive:false});
window.addEventListener('resize',function(){resize();redraw();});
// For tests and for a curious reader: where a point is drawn, its link and thumbnail, and a synchronous draw.
window.mapView={count:n,screenOf:function(i){return [X[i]*view.s+view.ox,Y[i]*view.s+view.oy];},
 indexOf:function(item,key){for(var i=0;i<n;i++)if(D.items[D.i[i]][0]===item&&D.k[i]===key)return i;return -1;},
 link:page,thumb:thumb,zoom:function(f,cx,cy){zoom(f,cx,cy);draw();},pan:function(dx,dy){view.ox+=dx;view.oy+=dy;draw();},
 reset:function(){fit();draw();}};
resize();draw();})();

from django import forms
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse


class VoteForm(forms.Form):
    choice = forms.CharField(max_length=20)


def index(request):
    request.session["visits"] = request.session.get("visits", 0) + 1
    return render(request, "polls/index.html", {"form": VoteForm(), "visits": request.session["visits"]})


def vote(request):
    form = VoteForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        return HttpResponseRedirect(reverse("index") + "?voted=" + form.cleaned_data["choice"])
    return render(request, "polls/index.html", {"form": form, "visits": 0})


def boom(request):
    raise RuntimeError("boom")


from django.urls import path

from polls import views

urlpatterns = [
    path("", views.index, name="index"),
    path("vote/", views.vote, name="vote"),
    path("boom/", views.boom),
]

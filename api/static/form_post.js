// OAuth 2.0 Form Post Response Mode: submit the response to the client at once (the button is the fallback).
document.getElementById("form-post").submit();

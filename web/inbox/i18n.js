// Every string a person sees in the inbox, in English and French. Nothing in
// the other modules is written for humans except through t().
const strings = {
  en: {
    title: 'Parley Inbox',
    sign_in: 'Sign in',
    sign_in_help: 'Paste your agent token. It stays in this tab only.',
    token: 'Agent token',
    sign_out: 'Sign out',
    language: 'Language',
    available: 'Available',
    unavailable: 'Unavailable',
    availability: 'Availability',
    from_schedule: 'from your weekly schedule',
    override_until: 'until {time}',
    override_until_back: 'until you switch back',
    connecting: 'Connecting…',
    reconnecting: 'Connection lost. Reconnecting…',
    signed_out_bad_token: 'This token was refused. Sign in again.',
    active: 'Active',
    all: 'All',
    conversations: 'Conversations',
    load_more: 'Load more',
    no_conversations: 'No conversations yet.',
    no_selection: 'Pick a conversation on the left, or accept an incoming chat.',
    visitor: 'Visitor',
    anonymous: 'Anonymous visitor',
    incoming_chat: 'Incoming chat',
    route: 'Route: {route}',
    seconds_left: '{n} s left',
    accept: 'Accept',
    decline: 'Decline',
    offer_gone_taken: 'Accepted in another tab or by a colleague.',
    offer_gone_expired: 'The offer expired.',
    offer_gone_visitor_left: 'The visitor left.',
    offer_gone_agent_unavailable: 'Withdrawn: you are unavailable.',
    offer_gone_conflict: 'This chat is no longer available.',
    new_chat_notification: 'New chat from {name}',
    message_placeholder: 'Type a message. Enter sends, Shift+Enter adds a line.',
    send: 'Send',
    sending: 'sending…',
    end_chat: 'End chat',
    ended: 'Ended',
    state_active: 'Active',
    state_routing: 'Waiting',
    state_queued: 'Queued',
    state_ended: 'Ended',
    chat_ended: 'The chat has ended.',
    score: 'Score',
    score_none: 'No score',
    share_calendar: 'Share a calendar',
    share: 'Share',
    my_calendar: '{name} (me)',
    no_calendar: '{name} (no calendar)',
    calendar_of: 'Book a meeting with {name}',
    typing: '{name} is typing…',
    you: 'You',
    earlier_messages: 'Show earlier messages',
    visitor_card: 'Visitor',
    name: 'Name',
    job_title: 'Job title',
    email: 'Email',
    phone: 'Phone',
    crm_status: 'CRM status',
    company: 'Company',
    activity: 'Activity history',
    no_activity: 'No activity in the last 90 days.',
    transcript: 'Transcript',
    download_txt: '.txt',
    download_label: 'Download the transcript as text',
    open_transcript: 'Open the transcript',
    activity_chat_requested: 'Chat requested',
    activity_agent_engaged: 'Agent joined',
    activity_chat_missed: 'Chat missed',
    activity_chat_ended: 'Chat ended',
    activity_calendar_shared: 'Calendar shared',
    activity_meeting_booked: 'Meeting booked',
    activity_visited_webpage: 'Visited a web page',
    activity_filled_out_form: 'Filled out a form',
    activity_opened_email: 'Opened an email',
    keyboard: 'Keyboard shortcuts',
    key_next: 'next conversation',
    key_previous: 'previous conversation',
    key_accept: 'accept the incoming chat',
    key_end: 'end the open chat',
    key_composer: 'write a message',
    key_availability: 'switch availability',
    error: 'Error: {message}',
    back: 'Back',
  },
  fr: {
    title: 'Boîte de réception Parley',
    sign_in: 'Se connecter',
    sign_in_help: 'Collez votre jeton d’agent. Il ne reste que dans cet onglet.',
    token: 'Jeton d’agent',
    sign_out: 'Se déconnecter',
    language: 'Langue',
    available: 'Disponible',
    unavailable: 'Indisponible',
    availability: 'Disponibilité',
    from_schedule: 'selon votre planning hebdomadaire',
    override_until: 'jusqu’à {time}',
    override_until_back: 'jusqu’à ce que vous changiez',
    connecting: 'Connexion…',
    reconnecting: 'Connexion perdue. Reconnexion…',
    signed_out_bad_token: 'Ce jeton a été refusé. Reconnectez-vous.',
    active: 'En cours',
    all: 'Toutes',
    conversations: 'Conversations',
    load_more: 'Afficher plus',
    no_conversations: 'Aucune conversation pour l’instant.',
    no_selection: 'Choisissez une conversation à gauche, ou acceptez un chat entrant.',
    visitor: 'Visiteur',
    anonymous: 'Visiteur anonyme',
    incoming_chat: 'Chat entrant',
    route: 'Routage : {route}',
    seconds_left: '{n} s restantes',
    accept: 'Accepter',
    decline: 'Refuser',
    offer_gone_taken: 'Accepté dans un autre onglet ou par un collègue.',
    offer_gone_expired: 'L’offre a expiré.',
    offer_gone_visitor_left: 'Le visiteur est parti.',
    offer_gone_agent_unavailable: 'Retirée : vous êtes indisponible.',
    offer_gone_conflict: 'Ce chat n’est plus disponible.',
    new_chat_notification: 'Nouveau chat de {name}',
    message_placeholder: 'Écrivez un message. Entrée envoie, Maj+Entrée ajoute une ligne.',
    send: 'Envoyer',
    sending: 'envoi…',
    end_chat: 'Terminer le chat',
    ended: 'Terminée',
    state_active: 'En cours',
    state_routing: 'En attente',
    state_queued: 'En file',
    state_ended: 'Terminée',
    chat_ended: 'Le chat est terminé.',
    score: 'Note',
    score_none: 'Sans note',
    share_calendar: 'Partager un agenda',
    share: 'Partager',
    my_calendar: '{name} (moi)',
    no_calendar: '{name} (pas d’agenda)',
    calendar_of: 'Prendre rendez-vous avec {name}',
    typing: '{name} écrit…',
    you: 'Vous',
    earlier_messages: 'Afficher les messages précédents',
    visitor_card: 'Visiteur',
    name: 'Nom',
    job_title: 'Poste',
    email: 'E-mail',
    phone: 'Téléphone',
    crm_status: 'Statut CRM',
    company: 'Entreprise',
    activity: 'Historique d’activité',
    no_activity: 'Aucune activité ces 90 derniers jours.',
    transcript: 'Transcription',
    download_txt: '.txt',
    download_label: 'Télécharger la transcription en texte',
    open_transcript: 'Ouvrir la transcription',
    activity_chat_requested: 'Chat demandé',
    activity_agent_engaged: 'Agent engagé',
    activity_chat_missed: 'Chat manqué',
    activity_chat_ended: 'Chat terminé',
    activity_calendar_shared: 'Agenda partagé',
    activity_meeting_booked: 'Rendez-vous pris',
    activity_visited_webpage: 'Page web visitée',
    activity_filled_out_form: 'Formulaire rempli',
    activity_opened_email: 'E-mail ouvert',
    keyboard: 'Raccourcis clavier',
    key_next: 'conversation suivante',
    key_previous: 'conversation précédente',
    key_accept: 'accepter le chat entrant',
    key_end: 'terminer le chat ouvert',
    key_composer: 'écrire un message',
    key_availability: 'changer la disponibilité',
    error: 'Erreur : {message}',
    back: 'Retour',
  },
};

export const languages = Object.keys(strings);
let current = 'en';

export function detectLanguage(saved, browserLanguages) {
  if (saved && strings[saved]) return saved;
  for (const tag of browserLanguages || []) {
    const base = String(tag).slice(0, 2).toLowerCase();
    if (strings[base]) return base;
  }
  return 'en';
}

export function setLanguage(language) {
  current = strings[language] ? language : 'en';
  document.documentElement.lang = current;
}

export function language() { return current; }

// Unknown keys show themselves, so a missing translation is visible, not blank.
export function t(key, vars = {}) {
  const template = strings[current][key] ?? strings.en[key] ?? key;
  return template.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ''));
}

// Static text of index.html: data-i18n sets textContent, data-i18n-label
// aria-label, data-i18n-placeholder the placeholder.
export function translatePage(root = document) {
  for (const node of root.querySelectorAll('[data-i18n]')) node.textContent = t(node.dataset.i18n);
  for (const node of root.querySelectorAll('[data-i18n-label]')) node.setAttribute('aria-label', t(node.dataset.i18nLabel));
  for (const node of root.querySelectorAll('[data-i18n-placeholder]')) node.placeholder = t(node.dataset.i18nPlaceholder);
  document.title = t('title');
}

export function formatTime(at) {
  return new Intl.DateTimeFormat(current, { hour: '2-digit', minute: '2-digit' }).format(new Date(at));
}

export function formatDateTime(at) {
  return new Intl.DateTimeFormat(current, { dateStyle: 'short', timeStyle: 'short' }).format(new Date(at));
}
